package schemaregistry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/mqtt/client"
)

// Client calls the registry API over MQTT 5 request/response, as the Azure
// IoT Operations SDKs' schema registry client does: what connectors use to
// register the schema of what they publish.
type Client struct {
	MQTT *client.Client
	// Timeout bounds one request (default 10s).
	Timeout time.Duration
}

// ErrRefused is a request the registry answered with an error status.
var ErrRefused = errors.New("schema registry refused the request")

// Put registers a schema version and returns it as stored (with the name
// and namespace the registry gave it).
func (c *Client) Put(ctx context.Context, req PutRequest) (*Schema, error) {
	payload, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	resp, err := c.call(ctx, PutTopic, payload)
	if err != nil {
		return nil, err
	}
	if resp == nil || resp.Name == "" || resp.Version == "" {
		return nil, fmt.Errorf("schema registry put: %w: the response names no schema", ErrRefused)
	}
	return resp, nil
}

// Get returns a schema version (the latest when version is empty), or nil
// when the registry has no such schema or version.
func (c *Client) Get(ctx context.Context, name, version string) (*Schema, error) {
	var req GetRequest
	req.GetSchemaRequest.Name, req.GetSchemaRequest.Version = name, version
	payload, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	return c.call(ctx, GetTopic, payload)
}

// Register puts content as version 1 of a schema named by its content hash
// and returns the reference messages carry in their CloudEvents
// dataschema attribute: aio-sr://<namespace>/<name>:<version>, as the
// SDKs' connectors write it.
func (c *Client) Register(ctx context.Context, format, content string) (string, error) {
	var req PutRequest
	p := &req.PutSchemaRequest
	p.Format, p.SchemaType, p.SchemaContent, p.Version = format, config.SchemaTypeMessage, content, "1"
	s, err := c.Put(ctx, req)
	if err != nil {
		return "", err
	}
	return Reference(s), nil
}

// Reference is a stored schema's reference:
// aio-sr://<namespace>/<name>:<version>.
func Reference(s *Schema) string {
	ns := s.Namespace
	if ns == "" {
		ns = Namespace
	}
	return config.SchemaRefScheme + ns + "/" + s.Name + ":" + s.Version
}

func (c *Client) call(ctx context.Context, topic string, payload []byte) (*Schema, error) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	m, err := c.MQTT.Request(ctx, &client.Message{
		Topic: topic, Payload: payload, QoS: 1, ContentType: "application/json", PayloadFormat: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("schema registry %s: %w", topic[len(TopicPrefix):], err)
	}
	status, msg := "", ""
	for _, u := range m.User {
		switch u.Key {
		case propStatus:
			status = u.Value
		case propStatusMessage:
			msg = u.Value
		}
	}
	if status != "200" {
		return nil, fmt.Errorf("schema registry %s: %w: status %s: %s", topic[len(TopicPrefix):], ErrRefused, status, msg)
	}
	if len(m.Payload) == 0 {
		return nil, nil // not found, as the registry answers it
	}
	var resp Response
	if err := json.Unmarshal(m.Payload, &resp); err != nil {
		return nil, fmt.Errorf("schema registry %s: decoding the response: %w", topic[len(TopicPrefix):], err)
	}
	return resp.Schema, nil
}
