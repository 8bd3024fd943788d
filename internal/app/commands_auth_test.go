package app

import (
	"context"
	"sync"
	"testing"

	"github.com/edgeport/edgeport/internal/config"
	mqttc "github.com/edgeport/edgeport/internal/mqtt/client"
	"github.com/edgeport/edgeport/internal/mqtt/client/clienttest"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/testwait"
)

// The connectors' write and call servers answer only on response topics
// the requester may subscribe to: a client allowed to command an asset
// but not to read replies/alice/# cannot make the OPC UA or Modbus
// connector publish there. Its requests with a response topic of its own
// are answered.
func TestCommandResponsesAuthorizedLikeSubscribe(t *testing.T) {
	a := startApp(t, Config{})
	apply(t, a, `apiVersion: edgeport.io/v1
kind: BrokerAuthentication
metadata: {name: users}
spec:
  authenticationMethods:
  - method: UsernamePassword
    usernamePasswordSettings:
      users: [{username: eve, passwordHash: "`+hashFor(t, "pw")+`"}]
`)
	apply(t, a, `apiVersion: edgeport.io/v1
kind: BrokerAuthorization
metadata: {name: commands}
spec:
  authorizationPolicies:
    rules:
    - principals: {usernames: [eve]}
      brokerResources:
      - {method: Connect}
      - {method: Publish, topics: ["edgeport/opcua/#", "edgeport/modbus/#"]}
      - {method: Subscribe, topics: ["replies/{principal.username}/#"]}
`)
	apply(t, a, listenerYAML("plant", "{port: 0, authenticationRef: users, authorizationRef: commands}"))
	o := waitStatus(t, a, config.Key{Kind: "BrokerListener", Name: "plant"}, config.ConditionTrue)

	// A watcher on the open built-in port sees every reply.
	watcher := tcpClient(t, a, "watcher")
	var mu sync.Mutex
	var seen []string
	ctx := context.Background()
	if err := watcher.Subscribe(ctx, mqttc.Subscription{Filters: []packet.Subscription{{Filter: "replies/#", QoS: 1}},
		Handler: func(_ context.Context, m *mqttc.Message) { mu.Lock(); seen = append(seen, m.Topic); mu.Unlock() }}); err != nil {
		t.Fatal(err)
	}
	eve := clienttest.Connect(t, mqttc.Options{Dialer: mqttc.TCP(portAddr(t, o, 0), nil), ClientID: "eve-1", Username: "eve", Password: []byte("pw"), NoReconnect: true})
	cctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var answers []*mqttc.Message
	if err := eve.Subscribe(cctx, mqttc.Subscription{Filters: []packet.Subscription{{Filter: "replies/eve/#", QoS: 1}},
		Handler: func(_ context.Context, m *mqttc.Message) { mu.Lock(); answers = append(answers, m); mu.Unlock() }}); err != nil {
		t.Fatal(err)
	}
	for _, topic := range []string{"edgeport/opcua/press-1/write", "edgeport/modbus/press-1/write"} {
		for _, reply := range []string{"replies/alice/stolen", "replies/eve/mine"} {
			if err := eve.Publish(cctx, &mqttc.Message{Topic: topic, QoS: 1, ResponseTopic: reply, CorrelationData: []byte("c1"),
				Payload: []byte(`{"dataPoint": "setpoint", "value": 1}`)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Requests are handled in order per server: once both answers on
	// eve's own topic arrived, the refused ones were decided.
	testwait.For(t, "two answers", func() bool { mu.Lock(); defer mu.Unlock(); return len(answers) == 2 })
	mu.Lock()
	defer mu.Unlock()
	for _, m := range answers {
		if st, _ := m.UserValue("status"); st != "error" || string(m.CorrelationData) != "c1" {
			t.Errorf("answer on %s: status %q, %s", m.Topic, st, m.Payload)
		}
	}
	for _, s := range seen {
		if s != "replies/eve/mine" {
			t.Errorf("a response was published on %s, which the requester may not read", s)
		}
	}
}
