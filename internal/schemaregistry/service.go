package schemaregistry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/lifecycle"
	"github.com/edgeport/edgeport/internal/mqtt/client"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// Protocol constants of the Azure IoT Operations SDKs' schema registry
// client (github.com/Azure/iot-operations-sdks, services/schemaregistry):
// commands are invoked on adr/{modelId}/{commandName}.
const (
	ModelID     = "dtmi:ms:adr:SchemaRegistry;1"
	TopicPrefix = "adr/" + ModelID + "/"
	PutTopic    = TopicPrefix + "put"
	GetTopic    = TopicPrefix + "get"
	// Namespace is what the Namespace field of every schema says: the one
	// local registry.
	Namespace = "edgeport"

	protocolVersion = "1.0"
)

// User properties of the SDKs' RPC conventions.
const (
	propStatus          = "__stat"
	propStatusMessage   = "__stMsg"
	propProtocolVersion = "__protVer"
	propInvalidName     = "__propName"
	propApplicationErr  = "__apErr"
)

// Schema is a schema as the API carries it (SDK type Schema).
type Schema struct {
	Description   string            `json:"description,omitempty"`
	DisplayName   string            `json:"displayName,omitempty"`
	Format        string            `json:"format,omitempty"`
	Hash          string            `json:"hash,omitempty"`
	Name          string            `json:"name,omitempty"`
	Namespace     string            `json:"namespace,omitempty"`
	SchemaContent string            `json:"schemaContent,omitempty"`
	SchemaType    string            `json:"schemaType,omitempty"`
	Tags          map[string]string `json:"tags,omitempty"`
	Version       string            `json:"version,omitempty"`
}

// PutRequest is the put command's payload.
type PutRequest struct {
	PutSchemaRequest struct {
		Description   string            `json:"description,omitempty"`
		DisplayName   string            `json:"displayName,omitempty"`
		Format        string            `json:"format,omitempty"`
		SchemaContent string            `json:"schemaContent,omitempty"`
		SchemaType    string            `json:"schemaType,omitempty"`
		Tags          map[string]string `json:"tags,omitempty"`
		Version       string            `json:"version,omitempty"`
	} `json:"putSchemaRequest"`
}

// GetRequest is the get command's payload.
type GetRequest struct {
	GetSchemaRequest struct {
		Name    string `json:"name,omitempty"`
		Version string `json:"version,omitempty"`
	} `json:"getSchemaRequest"`
}

// Response is both commands' response payload. When get finds nothing the
// response has no payload at all.
type Response struct {
	Schema *Schema `json:"schema,omitempty"`
}

// NameFor is the resource name of a schema registered through put: the
// first 32 hex digits (128 bits) of its content's SHA-256, since resource
// names are at most 63 characters. The full hash is in Schema.Hash.
func NameFor(content string) string { return config.SchemaContentHash(content)[:32] }

// Service answers put and get on an internal MQTT client and keeps each
// Schema resource's status (its versions and their hashes) current.
type Service struct {
	store   *config.Store
	client  *client.Client
	log     *slog.Logger
	running atomic.Bool    // between Start and Stop: serve requests and write status
	wg      sync.WaitGroup // requests in progress
	stop    chan struct{}  // closed by Stop: ends the usage refresh
	loop    sync.WaitGroup // the usage refresh
	refresh time.Duration  // the usage refresh's period (usageRefresh)
}

// usageRefresh is how often every Schema's usedBy is recomputed, for the
// asset datasets whose status (which notifies no watcher) names a schema.
const usageRefresh = 5 * time.Second

var _ lifecycle.Component = (*Service)(nil)

// New returns the service of st's Schema resources on cl; it registers its
// status writer with st now (the store has no way to unregister one).
func New(st *config.Store, cl *client.Client, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Service{store: st, client: cl, log: log, stop: make(chan struct{}), refresh: usageRefresh}
	st.Watch(func(k config.Key) {
		if !s.running.Load() {
			return
		}
		switch k.Kind {
		case "Schema":
			s.writeStatus(k)
		case "Dataflow", "Asset":
			s.writeAllStatus() // what uses which schema changed
		}
	})
	return s
}

// Start writes the status of the schemas already stored and subscribes to
// the command topics. When the client is not connected within a few
// seconds Start returns anyway: the client subscribes when it connects.
func (s *Service) Start(ctx context.Context) error {
	s.running.Store(true)
	s.writeAllStatus()
	s.loop.Add(1)
	go func() {
		defer s.loop.Done()
		t := time.NewTicker(s.refresh)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				s.writeAllStatus()
			}
		}
	}()
	err := s.client.SubscribeWithin(ctx, client.Subscription{
		Filters: []packet.Subscription{{Filter: TopicPrefix + "+", QoS: 1}},
		Handler: s.handle,
	}, 5*time.Second)
	switch {
	case errors.Is(err, client.ErrSubscribePending):
		s.log.Warn("schema registry API unavailable until its client connects", "err", err)
	case err != nil:
		s.running.Store(false)
		close(s.stop)
		s.loop.Wait()
		return fmt.Errorf("schema registry: subscribing: %w", err)
	}
	return nil
}

// Stop unsubscribes and waits for requests in progress.
func (s *Service) Stop(ctx context.Context) error {
	s.running.Store(false)
	close(s.stop)
	s.loop.Wait()
	uctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := s.client.Unsubscribe(uctx, TopicPrefix+"+"); err != nil {
		s.log.Debug("schema registry: unsubscribing", "err", err)
	}
	s.wg.Wait()
	return nil
}

func (s *Service) writeAllStatus() {
	for _, o := range s.store.List("Schema", config.Selector{}) {
		s.writeStatus(o.Key())
	}
}

// writeStatus writes a Schema's status: Ready, its versions with their
// hashes, and what uses it. Unchanged status is not rewritten.
func (s *Service) writeStatus(k config.Key) {
	o, ok := s.store.Get(k)
	if !ok {
		return
	}
	spec := o.Spec.(*config.SchemaSpec)
	st := config.Status{Conditions: []config.Condition{{
		Type: config.ConditionReady, Status: config.ConditionTrue, Reason: "Stored",
		Message: fmt.Sprintf("%d version(s) served by the schema registry", len(spec.Versions)),
	}}}
	for _, v := range spec.Versions {
		st.Versions = append(st.Versions, config.SchemaVersionStatus{Name: v.Name, Hash: config.SchemaContentHash(v.SchemaContent)})
	}
	all := config.Selector{}
	st.UsedBy = config.SchemaUses(k.Name, s.store.List("Dataflow", all), s.store.List("Asset", all))
	if o.Status != nil && o.Status.ObservedGeneration == o.Metadata.Generation &&
		reflect.DeepEqual(o.Status.Versions, st.Versions) && reflect.DeepEqual(o.Status.UsedBy, st.UsedBy) &&
		len(o.Status.Conditions) == 1 && o.Status.Conditions[0].Message == st.Conditions[0].Message {
		return
	}
	s.store.SetStatus(k, o.Metadata.UID, o.Metadata.Generation, st)
}

// rpcError is a refused request: its status code, message and, for a bad
// request, the payload field at fault.
type rpcError struct {
	status   string
	msg      string
	property string
}

func (e *rpcError) Error() string { return e.msg }

// handle runs on the client's delivery goroutine, one request at a time.
func (s *Service) handle(ctx context.Context, msg *client.Message) {
	s.wg.Add(1)
	defer s.wg.Done()
	if !s.running.Load() {
		return
	}
	if msg.ResponseTopic == "" {
		s.log.Warn("schema registry request without a response topic ignored", "topic", msg.Topic)
		return
	}
	var resp Response
	var err error
	switch cmd := strings.TrimPrefix(msg.Topic, TopicPrefix); cmd {
	case "put":
		resp, err = s.put(msg.Payload)
	case "get":
		resp, err = s.get(msg.Payload)
	default:
		err = &rpcError{status: "400", msg: fmt.Sprintf("unknown command %q (put or get)", cmd)}
	}
	user := []packet.UserProperty{{Key: propProtocolVersion, Value: protocolVersion}}
	var payload []byte
	var re *rpcError
	switch {
	case errors.As(err, &re):
		user = append(user, packet.UserProperty{Key: propStatus, Value: re.status}, packet.UserProperty{Key: propStatusMessage, Value: re.msg})
		if re.property != "" {
			user = append(user, packet.UserProperty{Key: propInvalidName, Value: re.property})
		}
		if re.status == "422" {
			user = append(user, packet.UserProperty{Key: propApplicationErr, Value: "true"})
		}
	case err != nil:
		user = append(user, packet.UserProperty{Key: propStatus, Value: "500"}, packet.UserProperty{Key: propStatusMessage, Value: err.Error()})
	default:
		// get of an unknown name or version: an empty payload, as Azure
		// IoT Operations' registry answers (the SDKs' client takes the
		// payload that does not decode at offset 0 for "not found").
		if resp.Schema != nil {
			payload, _ = json.Marshal(resp)
		}
		user = append(user, packet.UserProperty{Key: propStatus, Value: "200"})
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.client.Respond(rctx, msg, &client.Message{
		Payload: payload, ContentType: "application/json", PayloadFormat: 1, User: user,
	}); err != nil {
		s.log.Warn("schema registry: responding", "topic", msg.Topic, "err", err)
	}
}

func (s *Service) put(payload []byte) (Response, error) {
	var req PutRequest
	if err := json.Unmarshal(payload, &req); err != nil {
		return Response{}, &rpcError{status: "400", msg: "the payload must be JSON {\"putSchemaRequest\": {...}}: " + err.Error()}
	}
	p := req.PutSchemaRequest
	if p.SchemaContent == "" {
		return Response{}, &rpcError{status: "400", msg: "schemaContent is required", property: "schemaContent"}
	}
	if p.Format == "" {
		return Response{}, &rpcError{status: "400", msg: "format is required", property: "format"}
	}
	if p.Version == "" {
		p.Version = "1"
	}
	name := NameFor(p.SchemaContent)
	k := config.Key{Kind: "Schema", Name: name}
	var spec config.SchemaSpec
	if o, ok := s.store.Get(k); ok {
		spec = *o.Spec.(*config.SchemaSpec)
		if v := spec.Version(p.Version); v != nil && v.SchemaContent == p.SchemaContent {
			return Response{Schema: toAPI(name, &spec, v)}, nil // registered already
		}
		spec.Versions = append(append([]config.SchemaVersion(nil), spec.Versions...), config.SchemaVersion{Name: p.Version, SchemaContent: p.SchemaContent})
	} else {
		spec = config.SchemaSpec{
			DisplayName: p.DisplayName, Description: p.Description, Format: p.Format, SchemaType: p.SchemaType,
			Tags: p.Tags, Versions: []config.SchemaVersion{{Name: p.Version, SchemaContent: p.SchemaContent}},
		}
	}
	obj := &config.Object{APIVersion: config.APIVersion, Kind: "Schema", Metadata: config.Metadata{
		Name:   name,
		Labels: map[string]string{"edgeport.io/registered-by": "mqtt"},
	}, Spec: &spec}
	_, out, err := s.store.Apply(obj, config.ApplyOptions{})
	var ve *config.ValidationError
	if errors.As(err, &ve) {
		// The first problem names the request field it comes from.
		first := ve.Errs.Strings()[0]
		prop := "schemaContent"
		for _, f := range []string{"format", "schemaType", "tags"} {
			if strings.HasPrefix(first, "spec."+f) {
				prop = f
			}
		}
		if strings.HasPrefix(first, "spec.versions[") && strings.Contains(first, "].name:") {
			prop = "version"
		}
		return Response{}, &rpcError{status: "422", msg: strings.Join(ve.Errs.Strings(), "; "), property: prop}
	}
	if err != nil {
		return Response{}, err
	}
	stored := out.Spec.(*config.SchemaSpec)
	return Response{Schema: toAPI(name, stored, stored.Version(p.Version))}, nil
}

func (s *Service) get(payload []byte) (Response, error) {
	var req GetRequest
	if err := json.Unmarshal(payload, &req); err != nil {
		return Response{}, &rpcError{status: "400", msg: "the payload must be JSON {\"getSchemaRequest\": {...}}: " + err.Error()}
	}
	g := req.GetSchemaRequest
	if g.Name == "" {
		return Response{}, &rpcError{status: "400", msg: "name is required", property: "name"}
	}
	o, ok := s.store.Get(config.Key{Kind: "Schema", Name: g.Name})
	if !ok {
		return Response{}, nil
	}
	spec := o.Spec.(*config.SchemaSpec)
	v := spec.Latest()
	if g.Version != "" {
		v = spec.Version(g.Version)
	}
	if v == nil {
		return Response{}, nil
	}
	return Response{Schema: toAPI(g.Name, spec, v)}, nil
}

func toAPI(name string, s *config.SchemaSpec, v *config.SchemaVersion) *Schema {
	desc := s.Description
	if v.Description != "" {
		desc = v.Description
	}
	return &Schema{
		Description: desc, DisplayName: s.DisplayName, Format: s.Format, Hash: config.SchemaContentHash(v.SchemaContent),
		Name: name, Namespace: Namespace, SchemaContent: v.SchemaContent, SchemaType: s.SchemaType,
		Tags: s.Tags, Version: v.Name,
	}
}
