package connector

import (
	"log/slog"
	"sync"
	"time"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/prometheus/client_golang/prometheus"
)

// Endpoint is one device endpoint handed to Connector.Run, with the assets
// read through it. Its fields are read-only for the driver; its methods
// report what the driver sees.
type Endpoint struct {
	Device     string // Device resource name
	Name       string // endpoint name under spec.endpoints.inbound
	DeviceSpec *config.DeviceSpec
	Spec       *config.InboundEndpoint
	// Assets are the enabled, valid assets whose deviceRef names this
	// endpoint, by name.
	Assets  []*Asset
	Secrets Secrets
	Log     *slog.Logger

	typ       string
	st        *endpointStats
	connected prometheus.Gauge
	reconnect prometheus.Counter
	m         *metrics
	out       *outbox
	reg       SchemaRegistry // nil: datasets register no schema
	now       func() time.Time
}

// SetState records the endpoint's state; err (may be nil) is its latest
// problem. A change to Connected after having been connected before counts
// as a reconnect.
func (e *Endpoint) SetState(state string, err error) {
	now := e.now()
	st := e.st
	st.mu.Lock()
	was := st.state
	st.state = state
	if err != nil {
		st.lastErr, st.lastErrTime = err.Error(), now
	}
	if state == StateConnected && was != StateConnected {
		st.since = now
		if st.everConnected {
			st.reconnects++
			e.reconnect.Inc()
		}
		st.everConnected = true
	}
	st.mu.Unlock()
	if state == StateConnected {
		e.connected.Set(1)
	} else {
		e.connected.Set(0)
	}
}

// State returns the state last set.
func (e *Endpoint) State() string {
	e.st.mu.Lock()
	defer e.st.mu.Unlock()
	return e.st.state
}

// CountError counts an error of a kind (connect, timeout, an exception
// name) in edgeport_connector_errors_total.
func (e *Endpoint) CountError(kind string) {
	e.m.errors.WithLabelValues(e.typ, e.Device, e.Name, kind).Inc()
}

// Asset is one asset as a driver reads it.
type Asset struct {
	Name     string
	Spec     *config.AssetSpec
	Datasets []*Dataset // parallel to Spec.Datasets
	// Events has one entry per event of every event group, named
	// "group/event"; DataPoints are the event's.
	Events []*Dataset
}

// Dataset is one dataset (or event) of an asset: what a driver publishes
// and reports on.
type Dataset struct {
	Asset *Asset
	Name  string
	// DataSource, TypeRef and DataPoints are the dataset's (or event's).
	DataSource string
	TypeRef    string
	DataPoints []config.DataPoint
	// Configuration is the dataset's datasetConfiguration, or the asset's
	// default (for events: eventConfiguration or the defaults).
	Configuration config.JSON
	Destinations  []config.Destination

	ep      *Endpoint
	st      *datasetStats
	samples prometheus.Counter
}

// Publish sends a frame to the dataset's destinations and updates its
// status. It encodes the payload once and never blocks: when the publish
// buffer is full the message is dropped and counted. It keeps no reference
// to f.Samples, so a driver may reuse the slice.
func (d *Dataset) Publish(f Frame) {
	if len(f.Samples) == 0 {
		return
	}
	now := d.ep.now()
	oldest := f.Samples[0].SourceTimestamp
	for _, s := range f.Samples {
		if s.SourceTimestamp.Before(oldest) {
			oldest = s.SourceTimestamp
		}
	}
	d.st.addSamples(f.Samples)
	d.samples.Add(float64(len(f.Samples)))
	// About 90 bytes a sample ({"name":{"SourceTimestamp":"…","Value":…}}):
	// one allocation for a large frame instead of a dozen doublings.
	payload, err := EncodePayload(make([]byte, 0, 96*len(f.Samples)), f.Samples)
	if err != nil {
		d.SetError(err)
		d.ep.m.dropped.WithLabelValues(d.ep.typ, dropEncoding).Inc()
		d.st.addDropped()
		return
	}
	// The registered schema's reference, as Azure IoT Operations'
	// connectors set it; before one is registered, the typeRef.
	schema := d.st.schemaRef()
	if schema == "" {
		schema = d.TypeRef
	}
	ce := CloudEvent{
		ID:         newID(),
		Source:     d.ep.Spec.Address,
		Type:       EventType(d.ep.typ, f.Keyframe),
		Subject:    d.Asset.Name + "/" + d.Name,
		Time:       now,
		DataSchema: schema,
	}
	user := ce.UserProperties()
	for _, dst := range d.Destinations {
		c := dst.Configuration
		msg := &Message{Payload: payload, ContentType: ContentTypeJSON, PayloadFormat: 1, User: user}
		it := item{msg: msg, ds: d.st, typ: d.ep.typ, src: oldest}
		switch dst.Target {
		case config.TargetMqtt:
			msg.Topic, msg.Retain, msg.MessageExpiry = c.Topic, c.Retain == config.RetainKeep, uint32(c.TTL)
			if c.Qos == config.Qos1 {
				msg.QoS = 1
			}
		case config.TargetBrokerStateStore:
			it.key = c.Key
		default:
			continue
		}
		d.ep.out.enqueue(it)
	}
}

// SetPointError records a problem with one data point (nil clears it),
// shown in the asset's status.
func (d *Dataset) SetPointError(name string, err error) {
	d.st.setPointError(name, err)
}

// SetError records a problem with the dataset as a whole (nil clears it).
func (d *Dataset) SetError(err error) {
	d.st.mu.Lock()
	defer d.st.mu.Unlock()
	d.st.err = errString(err)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// endpointStats outlives a driver run: status counts across restarts.
type endpointStats struct {
	mu            sync.Mutex
	state         string // guarded by mu, as are the fields below
	since         time.Time
	lastErr       string
	lastErrTime   time.Time
	reconnects    uint64
	everConnected bool
}

func (st *endpointStats) status() config.EndpointStatus {
	st.mu.Lock()
	defer st.mu.Unlock()
	s := config.EndpointStatus{Connected: st.state == StateConnected, State: st.state, LastError: st.lastErr, Reconnects: st.reconnects}
	if s.Connected {
		s.ConnectedSince = timePtr(st.since)
	}
	if st.lastErr != "" {
		s.LastErrorTime = timePtr(st.lastErrTime)
	}
	return s
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC().Truncate(time.Millisecond)
	return &t
}

// datasetStats outlives a driver run while the dataset keeps its points.
type datasetStats struct {
	asset, name string
	points      []string       // immutable: data point names in order
	index       map[string]int // immutable: point name → position

	mu         sync.Mutex
	last       time.Time // guarded by mu, as are the fields below
	topic      string    // the first MQTT destination's topic
	schemaHash string    // the content hash of the schema registered last
	ref        string    // its reference (aio-sr://...)
	samples    uint64
	messages   uint64
	dropped    uint64
	err        string
	publishErr string
	pts        []pointStats
}

type pointStats struct {
	last    time.Time
	samples uint64
	err     string
}

func newDatasetStats(asset, name string, points []config.DataPoint) *datasetStats {
	st := &datasetStats{asset: asset, name: name, index: make(map[string]int, len(points)), pts: make([]pointStats, len(points))}
	for i, p := range points {
		st.points = append(st.points, p.Name)
		st.index[p.Name] = i
	}
	return st
}

func (st *datasetStats) samePoints(points []config.DataPoint) bool {
	if len(points) != len(st.points) {
		return false
	}
	for i, p := range points {
		if st.points[i] != p.Name {
			return false
		}
	}
	return true
}

func (st *datasetStats) addSamples(ss []Sample) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, s := range ss {
		st.samples++
		if s.SourceTimestamp.After(st.last) {
			st.last = s.SourceTimestamp
		}
		i, ok := st.index[s.Name]
		if !ok {
			continue
		}
		p := &st.pts[i]
		p.samples++
		if s.SourceTimestamp.After(p.last) {
			p.last = s.SourceTimestamp
		}
		if s.Status != nil {
			p.err = s.Status.Symbol
		} else {
			p.err = ""
		}
	}
}

func (st *datasetStats) setPointError(name string, err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if i, ok := st.index[name]; ok {
		st.pts[i].err = errString(err)
	}
}

func (st *datasetStats) setTopic(topic string) {
	st.mu.Lock()
	st.topic = topic
	st.mu.Unlock()
}

// registered returns the reference of the schema with this content hash
// when it is the one registered last.
func (st *datasetStats) registered(hash string) string {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.schemaHash == hash {
		return st.ref
	}
	return ""
}

func (st *datasetStats) setSchema(hash, ref string) {
	st.mu.Lock()
	st.schemaHash, st.ref = hash, ref
	st.mu.Unlock()
}

func (st *datasetStats) schemaRef() string {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.ref
}

func (st *datasetStats) addMessage() {
	st.mu.Lock()
	st.messages++
	st.publishErr = ""
	st.mu.Unlock()
}

func (st *datasetStats) addDropped() {
	st.mu.Lock()
	st.dropped++
	st.mu.Unlock()
}

func (st *datasetStats) setPublishError(err error) {
	st.mu.Lock()
	st.publishErr = "publishing: " + err.Error()
	st.mu.Unlock()
}

func (st *datasetStats) status() config.DatasetStatus {
	st.mu.Lock()
	defer st.mu.Unlock()
	s := config.DatasetStatus{Name: st.name, LastValueTime: timePtr(st.last), Samples: st.samples, Messages: st.messages, Dropped: st.dropped, Error: st.err,
		Topic: st.topic, SchemaRef: st.ref}
	if s.Error == "" {
		s.Error = st.publishErr
	}
	for i, name := range st.points {
		p := st.pts[i]
		s.DataPoints = append(s.DataPoints, config.DataPointStatus{Name: name, LastValueTime: timePtr(p.last), Samples: p.samples, Error: p.err})
	}
	return s
}
