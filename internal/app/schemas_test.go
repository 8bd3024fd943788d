package app

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/edgeport/edgeport/internal/config"
	mqttc "github.com/edgeport/edgeport/internal/mqtt/client"
	"github.com/edgeport/edgeport/internal/schemaregistry"
)

// TestSchemaRegistryInApp: a Schema applied as a resource is served by the
// registry API over MQTT (get over a real TCP connection), with its
// versions' hashes in its status.
func TestSchemaRegistryInApp(t *testing.T) {
	a := startApp(t, Config{})
	v1 := `{"type": "object", "properties": {"temperature": {"type": "number"}}}`
	apply(t, a, `apiVersion: edgeport.io/v1
kind: Schema
metadata: {name: thermostat}
spec:
  format: JsonSchema/draft-07
  versions:
  - name: "1"
    schemaContent: '`+v1+`'
`)
	o := waitStatus(t, a, config.Key{Kind: "Schema", Name: "thermostat"}, config.ConditionTrue)
	if len(o.Status.Versions) != 1 || o.Status.Versions[0].Hash != config.SchemaContentHash(v1) {
		t.Fatalf("status versions %+v", o.Status.Versions)
	}
	cl := tcpClient(t, a, "connector-1")
	var req schemaregistry.GetRequest
	req.GetSchemaRequest.Name = "thermostat"
	payload, _ := json.Marshal(req)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	m, err := cl.Request(ctx, &mqttc.Message{Topic: schemaregistry.GetTopic, Payload: payload, QoS: 1})
	if err != nil {
		t.Fatal(err)
	}
	var resp schemaregistry.Response
	if st, _ := m.UserValue("__stat"); st != "200" || json.Unmarshal(m.Payload, &resp) != nil || resp.Schema == nil || resp.Schema.SchemaContent != v1 {
		t.Fatalf("get: %s %s", st, m.Payload)
	}
}
