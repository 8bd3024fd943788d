package opcua

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/gopcua/opcua"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/connector"
)

// EndpointType is the device endpoint type this connector serves.
const EndpointType = config.EndpointTypeOpcUa

// Connector is the Microsoft.OpcUa connector: one Session per device
// endpoint, its subscriptions built from the endpoint's assets.
type Connector struct {
	dialer *Dialer
	log    *slog.Logger

	// mu guards sessions and assets.
	mu       sync.Mutex
	sessions map[string]*Session  // by device/endpoint
	assets   map[string]*assetRef // by asset name, for writes and calls
}

// assetRef is what a command addressed to an asset needs.
type assetRef struct {
	session *Session
	// points maps "point" and "dataset/point" to the data point's node id.
	points map[string]string
}

var _ connector.Connector = (*Connector)(nil)
var _ Sessions = (*Connector)(nil)

// NewConnector loads (creating on first start) the application certificate
// and the trust list under pkiDir (<data-dir>/opcua/pki). appURI is the
// application URI, hostname goes into the certificate's SAN.
func NewConnector(pkiDir, appURI, hostname string, log *slog.Logger) (*Connector, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	app, err := LoadOrCreateAppCert(pkiDir, appURI, hostname, time.Now())
	if err != nil {
		return nil, fmt.Errorf("opc ua application certificate: %w", err)
	}
	trust, err := OpenTrustList(pkiDir)
	if err != nil {
		return nil, err
	}
	return &Connector{dialer: &Dialer{App: app, Trust: trust}, log: log, sessions: map[string]*Session{}, assets: map[string]*assetRef{}}, nil
}

// EndpointType implements connector.Connector.
func (c *Connector) EndpointType() string { return EndpointType }

// Trust is the connector's trust list.
func (c *Connector) Trust() *TrustList { return c.dialer.Trust }

// App is the connector's application certificate.
func (c *Connector) App() *AppCert { return c.dialer.App }

// Session implements Sessions: the running session of a device endpoint
// (endpoint may be empty when the device has one OPC UA endpoint).
func (c *Connector) Session(device, endpoint string) (*Session, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if endpoint != "" {
		if s := c.sessions[device+"/"+endpoint]; s != nil {
			return s, nil
		}
		return nil, fmt.Errorf("device %s has no running OPC UA endpoint %q", device, endpoint)
	}
	var found *Session
	n := 0
	for k, s := range c.sessions {
		if strings.HasPrefix(k, device+"/") {
			found = s
			n++
		}
	}
	switch n {
	case 0:
		return nil, fmt.Errorf("device %s has no running OPC UA endpoint (is it applied and enabled?)", device)
	case 1:
		return found, nil
	}
	return nil, fmt.Errorf("device %s has %d OPC UA endpoints: name one", device, n)
}

// Run implements connector.Connector: it keeps the endpoint's session
// until ctx ends. Problems are reported in the endpoint's status; Run
// returns an error only for a configuration it cannot use, which a change
// of the resources fixes.
func (c *Connector) Run(ctx context.Context, ep *connector.Endpoint) error {
	opts, h, err := c.build(ep)
	if err != nil {
		ep.SetState(connector.StateError, err)
		<-ctx.Done()
		return nil
	}
	s, err := NewSession(c.dialer, opts, h)
	if err != nil {
		ep.SetState(connector.StateError, err)
		<-ctx.Done()
		return nil
	}
	key := ep.Device + "/" + ep.Name
	c.mu.Lock()
	c.sessions[key] = s
	for _, a := range ep.Assets {
		ref := &assetRef{session: s, points: map[string]string{}}
		for _, ds := range a.Datasets {
			for _, p := range ds.DataPoints {
				ref.points[ds.Name+"/"+p.Name] = p.DataSource
				if _, dup := ref.points[p.Name]; !dup {
					ref.points[p.Name] = p.DataSource
				}
			}
		}
		c.assets[a.Name] = ref
	}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		if c.sessions[key] == s {
			delete(c.sessions, key)
		}
		for name, ref := range c.assets {
			if ref.session == s {
				delete(c.assets, name)
			}
		}
		c.mu.Unlock()
	}()
	if err := s.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return s.Stop(sctx)
}

// EndpointConfiguration is a Microsoft.OpcUa endpoint's
// additionalConfiguration.
type EndpointConfiguration = config.OpcUaEndpointConfiguration

func (c *Connector) build(ep *connector.Endpoint) (Options, *handler, error) {
	var ac EndpointConfiguration
	var errs config.Errors
	config.DecodeConfig(ep.Spec.AdditionalConfiguration, &ac, "additionalConfiguration", &errs)
	if len(errs) > 0 {
		return Options{}, nil, configErr(errs)
	}
	e := Endpoint{URL: ep.Spec.Address}
	e.Policy = NormalizePolicy(ac.SecurityPolicy)
	e.Mode = NormalizeMode(ac.SecurityMode)
	opts := Options{Endpoint: e, Logger: ep.Log}
	if s := ac.Session; s != nil {
		opts.Endpoint.SessionTimeout = ms(s.TimeoutMilliseconds)
		opts.KeepAlive = ms(s.KeepAliveIntervalMilliseconds)
		opts.BackoffInitial = ms(s.ReconnectPeriodMilliseconds)
		opts.BackoffMax = ms(s.ReconnectExponentialBackOffMilliseconds)
		if s.WatchdogKeepAlives != nil {
			opts.WatchdogKeepAlives = *s.WatchdogKeepAlives
		}
	}
	if err := c.auth(ep, &opts.Endpoint); err != nil {
		return Options{}, nil, err
	}
	h := &handler{ep: ep, datasets: map[string]*dsState{}, events: map[string]*connector.Dataset{}}
	// Datasets with the same publishing interval share one OPC UA
	// subscription: gopcua keeps one publish request outstanding per
	// session, so every extra subscription costs a round trip per interval.
	// The handler splits each publish response by dataset again.
	byInterval := map[time.Duration]int{} // publishing interval -> index in opts.Groups
	var schemas []schemaDataset           // the datasets whose schemas are registered at each connection
	for _, a := range ep.Assets {
		for i, ds := range a.Datasets {
			var dc config.OpcUaDatasetConfiguration
			var errs config.Errors
			config.DecodeConfig(ds.Configuration, &dc, "datasetConfiguration", &errs)
			if len(errs) > 0 {
				ds.SetError(configErr(errs))
				continue
			}
			name := fmt.Sprintf("%s/%d", a.Name, i)
			pi := ms(dc.PublishingInterval)
			if pi == 0 {
				pi = time.Second
			}
			gi, ok := byInterval[pi]
			if !ok {
				gi = len(opts.Groups)
				byInterval[pi] = gi
				opts.Groups = append(opts.Groups, GroupSpec{Name: "data/" + pi.String(), PublishingInterval: pi})
			}
			g := &opts.Groups[gi]
			hb := ms(dc.HeartbeatInterval)
			sd := schemaDataset{ds: ds}
			for j, p := range ds.DataPoints {
				var pc config.OpcUaDataPointConfiguration
				var errs config.Errors
				config.DecodeConfig(p.DataPointConfiguration, &pc, fmt.Sprintf("dataPoints[%d].dataPointConfiguration", j), &errs)
				if len(errs) > 0 {
					ds.SetPointError(p.Name, configErr(errs))
					continue
				}
				it := ItemSpec{Name: p.Name, Dataset: name, Point: j, NodeID: p.DataSource, SamplingInterval: sampling(dc.SamplingInterval), QueueSize: u32(dc.QueueSize), Heartbeat: hb}
				if pc.SamplingInterval != nil {
					it.SamplingInterval = sampling(pc.SamplingInterval)
				}
				if pc.QueueSize != nil {
					it.QueueSize = u32(pc.QueueSize)
				}
				if pc.HeartbeatInterval != nil {
					it.Heartbeat = ms(pc.HeartbeatInterval)
				}
				if pc.Deadband != nil {
					it.DeadbandType, it.DeadbandValue = pc.Deadband.Type, pc.Deadband.Value
				}
				if err := validateItem(it); err != nil {
					ds.SetPointError(p.Name, err)
					continue
				}
				g.Items = append(g.Items, it)
				sd.points = append(sd.points, schemaPoint{name: p.Name, nodeID: p.DataSource})
			}
			schemas = append(schemas, sd)
			keyframes := 0
			if dc.KeyFrameCount != nil {
				keyframes = *dc.KeyFrameCount
			}
			h.datasets[name] = newDSState(ds, keyframes)
		}
		if len(a.Events) > 0 {
			g := GroupSpec{Name: a.Name + "/events", PublishingInterval: 500 * time.Millisecond}
			for i, ev := range a.Events {
				es := EventSpec{Name: fmt.Sprintf("%s/e%d", a.Name, i), NotifierID: ev.DataSource}
				var ec config.OpcUaEventConfiguration
				var errs config.Errors
				config.DecodeConfig(ev.Configuration, &ec, "eventConfiguration", &errs)
				if len(errs) > 0 {
					ev.SetError(configErr(errs))
					continue
				}
				if ec.PublishingInterval != nil {
					g.PublishingInterval = ms(ec.PublishingInterval)
				}
				es.QueueSize = u32(ec.QueueSize)
				es.TypeDefinition = ec.TypeDefinition
				if ec.MinSeverity != nil {
					es.MinSeverity = uint16(*ec.MinSeverity)
				}
				for _, p := range ev.DataPoints {
					es.Fields = append(es.Fields, p.DataSource)
				}
				g.Events = append(g.Events, es)
				h.events[es.Name] = ev
			}
			opts.Groups = append(opts.Groups, g)
		}
	}
	opts.OnConnect = func(ctx context.Context, c *opcua.Client) { registerSchemas(ctx, c, ep, schemas) }
	return opts, h, nil
}

func (c *Connector) auth(ep *connector.Endpoint, e *Endpoint) error {
	a := ep.Spec.Authentication
	if a == nil || a.Method == "" || a.Method == config.AuthAnonymous {
		e.Auth = Auth{Kind: AuthAnonymous}
		return nil
	}
	switch a.Method {
	case config.AuthUsernamePassword:
		u, err := ep.Secrets.Read(a.UsernamePasswordCredentials.UsernameSecretName)
		if err != nil {
			return fmt.Errorf("authentication: %w", err)
		}
		p, err := ep.Secrets.Read(a.UsernamePasswordCredentials.PasswordSecretName)
		if err != nil {
			return fmt.Errorf("authentication: %w", err)
		}
		e.Auth = Auth{Kind: AuthUserPass, Username: string(u), Password: string(p)}
	case config.AuthCertificate:
		certPEM, err := ep.Secrets.Read(a.X509Credentials.CertificateSecretName)
		if err != nil {
			return fmt.Errorf("authentication: %w", err)
		}
		keyRef := a.X509Credentials.KeySecretName
		keyPEM := certPEM
		if keyRef != "" {
			if keyPEM, err = ep.Secrets.Read(keyRef); err != nil {
				return fmt.Errorf("authentication: %w", err)
			}
		}
		der, key, err := parseUserCert(certPEM, keyPEM)
		if err != nil {
			return fmt.Errorf("authentication: %w", err)
		}
		e.Auth = Auth{Kind: AuthCertificate, CertDER: der, Key: key}
	default:
		return fmt.Errorf("authentication.method: %q is not supported by OPC UA", a.Method)
	}
	return nil
}

func parseUserCert(certPEM, keyPEM []byte) ([]byte, *rsa.PrivateKey, error) {
	var der []byte
	for rest := certPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" && der == nil {
			der = b.Bytes
		}
	}
	if der == nil {
		return nil, nil, errors.New("user certificate: no PEM CERTIFICATE block")
	}
	if _, err := x509.ParseCertificate(der); err != nil {
		return nil, nil, fmt.Errorf("user certificate: %w", err)
	}
	for rest := keyPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		switch b.Type {
		case "RSA PRIVATE KEY":
			k, err := x509.ParsePKCS1PrivateKey(b.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("user key: %w", err)
			}
			return der, k, nil
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("user key: %w", err)
			}
			rk, ok := k.(*rsa.PrivateKey)
			if !ok {
				return nil, nil, errors.New("user key: OPC UA needs an RSA key")
			}
			return der, rk, nil
		}
	}
	return nil, nil, errors.New("user key: no PEM private key block")
}

func ms(v *int) time.Duration {
	if v == nil || *v <= 0 {
		return 0
	}
	return time.Duration(*v) * time.Millisecond
}

// sampling maps a samplingInterval setting to ItemSpec's: as in OPC UA, 0
// is the server's fastest rate and -1 (or unset) the publishing interval.
func sampling(v *int) time.Duration {
	switch {
	case v == nil || *v < 0:
		return 0
	case *v == 0:
		return SamplingFastest
	}
	return time.Duration(*v) * time.Millisecond
}

func u32(v *int) uint32 {
	if v == nil || *v <= 0 {
		return 0
	}
	return uint32(*v)
}

// NormalizePolicy accepts a policy's short name or its URI
// (http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256).
func NormalizePolicy(p string) string {
	if i := strings.LastIndexByte(p, '#'); i >= 0 {
		p = p[i+1:]
	}
	for _, v := range Policies {
		if strings.EqualFold(v, p) {
			return v
		}
	}
	return p
}

// NormalizeMode accepts a mode in any case ("signAndEncrypt").
func NormalizeMode(m string) string {
	for _, v := range Modes {
		if strings.EqualFold(v, m) {
			return v
		}
	}
	return m
}

// dsState is one dataset's publishing state. The per-point slices are
// indexed by ItemSpec.Point, so a publish response of thousands of samples
// costs no map operation and, once the buffers have grown, no allocation
// per sample.
type dsState struct {
	ds        *connector.Dataset
	keyframes int // every Nth message carries every point; 0: never
	n         int
	last      []connector.Sample // by point, for key frames (nil without)
	seen      []bool             // by point: last holds a value

	// call is the handler's call in which mark/count/rounds were last reset.
	call   uint64
	mark   []uint64 // by point: the call in which count was last reset
	count  []int    // by point: values in the current call
	rounds [][]connector.Sample
}

func newDSState(ds *connector.Dataset, keyframes int) *dsState {
	n := len(ds.DataPoints)
	st := &dsState{ds: ds, keyframes: keyframes, mark: make([]uint64, n), count: make([]int, n)}
	if keyframes > 0 {
		st.last, st.seen = make([]connector.Sample, n), make([]bool, n)
	}
	return st
}

// handler turns session deliveries into dataset publications and status.
// The session calls it from one goroutine, so it needs no lock.
type handler struct {
	ep       *connector.Endpoint
	datasets map[string]*dsState
	events   map[string]*connector.Dataset

	call  uint64     // Samples calls so far
	order []*dsState // datasets of the current call, in first-seen order
}

func toSample(s Sample, now time.Time) connector.Sample {
	ts := s.SourceTimestamp
	if ts.IsZero() {
		ts = s.ServerTimestamp
	}
	if ts.IsZero() {
		ts = now
	}
	out := connector.Sample{Name: s.Name, Value: s.Value, SourceTimestamp: ts}
	if s.Status != 0 {
		out.Status = &connector.StatusCode{Code: s.Status, Symbol: StatusName(s.Status)}
	}
	return out
}

// Samples publishes one publish response's changes as one message per
// dataset: the batching per publishing interval. When an item's queue
// delivered several values at once, they go out as consecutive messages, so
// no message names a data point twice. The frames' buffers are reused from
// call to call: Dataset.Publish keeps no reference to them.
func (h *handler) Samples(group string, samples []Sample) {
	now := time.Now()
	h.call++
	h.order = h.order[:0]
	var cur *dsState
	curName := ""
	for i := range samples {
		s := &samples[i]
		if cur == nil || s.Dataset != curName {
			curName = s.Dataset
			if cur = h.datasets[curName]; cur == nil {
				continue
			}
			if cur.call != h.call {
				cur.call = h.call
				for r := range cur.rounds {
					cur.rounds[r] = cur.rounds[r][:0]
				}
				h.order = append(h.order, cur)
			}
		}
		p := s.Point
		if p < 0 || p >= len(cur.mark) {
			continue
		}
		if cur.mark[p] != h.call {
			cur.mark[p], cur.count[p] = h.call, 0
		}
		r := cur.count[p]
		cur.count[p]++
		for len(cur.rounds) <= r {
			cur.rounds = append(cur.rounds, make([]connector.Sample, 0, len(cur.mark)))
		}
		cs := toSample(*s, now)
		cur.rounds[r] = append(cur.rounds[r], cs)
		if cur.last != nil {
			cur.last[p], cur.seen[p] = cs, true
		}
	}
	for _, st := range h.order {
		for _, out := range st.rounds {
			if len(out) == 0 {
				break
			}
			st.n++
			key := st.keyframes > 0 && st.n%st.keyframes == 0
			if key {
				out = make([]connector.Sample, 0, len(st.ds.DataPoints))
				for p := range st.ds.DataPoints {
					if st.seen[p] {
						out = append(out, st.last[p])
					}
				}
			}
			st.ds.Publish(connector.Frame{Samples: out, Keyframe: key})
		}
	}
}

func (h *handler) Event(group string, ev Event) {
	ds := h.events[ev.Name]
	if ds == nil {
		return
	}
	now := time.Now()
	ts := now
	if t, ok := ev.Fields["Time"].(string); ok {
		if p, err := time.Parse(time.RFC3339Nano, t); err == nil {
			ts = p
		}
	}
	var out []connector.Sample
	if len(ds.DataPoints) > 0 {
		for _, p := range ds.DataPoints {
			out = append(out, connector.Sample{Name: p.Name, Value: ev.Fields[p.DataSource], SourceTimestamp: ts})
		}
	} else {
		for _, f := range defaultEventFields {
			out = append(out, connector.Sample{Name: f, Value: ev.Fields[f], SourceTimestamp: ts})
		}
	}
	ds.Publish(connector.Frame{Samples: out})
}

func (h *handler) SessionStatus(st Status) {
	switch st.State {
	case StateConnecting:
		if h.ep.State() != connector.StateError {
			h.ep.SetState(connector.StateConnecting, nil)
		}
	case StateConnected:
		h.ep.SetState(connector.StateConnected, nil)
	case StateError:
		h.ep.SetState(connector.StateError, st.Err)
		h.ep.CountError(errorKind(st.Err))
	}
}

func errorKind(err error) string {
	var ue *UntrustedError
	switch {
	case errors.As(err, &ue):
		return "untrusted_certificate"
	case errors.Is(err, ErrWatchdog):
		return "watchdog"
	case errors.Is(err, ErrUserRejected):
		return "user_rejected"
	case errors.Is(err, ErrNoEndpoint):
		return "no_endpoint"
	case err != nil && strings.Contains(err.Error(), "getting endpoints"):
		return "connect"
	}
	return "session"
}

func (h *handler) ItemStatus(group, dataset, item string, err error) {
	if st := h.datasets[dataset]; st != nil {
		st.ds.SetPointError(item, err)
		return
	}
	if ds := h.events[item]; ds != nil {
		ds.SetError(err)
	}
}

func configErr(errs config.Errors) error { return errors.New(strings.Join(errs.Strings(), "; ")) }
