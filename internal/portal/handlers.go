package portal

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/edgeport/edgeport/internal/api"
	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/telemetry"
)

func writeJSON(w http.ResponseWriter, code int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		data, _ = json.Marshal(api.ErrorBody{Error: "encoding the response: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(append(data, '\n'))
}

func writeJSONError(w http.ResponseWriter, code int, msg string, details []string) {
	writeJSON(w, code, api.ErrorBody{Error: msg, Details: details})
}

// sse writes Server-Sent Events. Each event extends the connection's write
// deadline, which the HTTP server otherwise sets for a whole response.
type sse struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func newSSE(w http.ResponseWriter) *sse {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	return &sse{w: w, rc: http.NewResponseController(w)}
}

func (s *sse) send(event string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_ = s.rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if _, err := fmt.Fprintf(s.w, "event: %s\ndata: %s\n\n", event, data); err != nil {
		return err
	}
	return s.rc.Flush()
}

// keepAlive is how often an idle stream sends a comment, so that proxies
// and the browser keep it open and a gone browser is noticed.
const keepAlive = 20 * time.Second

func (s *sse) ping() error {
	_ = s.rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(s.w, ": ping\n\n"); err != nil {
		return err
	}
	return s.rc.Flush()
}

// wait blocks until ch is closed (true), or the request or the portal
// ends (false). It pings an idle stream.
func (p *Portal) wait(r *http.Request, s *sse, ch <-chan struct{}) bool {
	t := time.NewTimer(keepAlive)
	defer t.Stop()
	for {
		select {
		case <-ch:
			return true
		case <-r.Context().Done():
			return false
		case <-p.done:
			return false
		case <-t.C:
			if s.ping() != nil {
				return false
			}
			t.Reset(keepAlive)
		}
	}
}

// overviewDoc is the overview page's data.
type overviewDoc struct {
	Status          telemetry.Status `json:"status"`
	Verdict         Verdict          `json:"verdict"`
	StorageUsed     *int64           `json:"storageUsed"`
	StorageQuota    int64            `json:"storageQuota"`
	IntervalSeconds float64          `json:"intervalSeconds"`
	Samples         []Sample         `json:"samples,omitempty"`
	Resources       int              `json:"resources"`
}

func (p *Portal) overviewNow() overviewDoc {
	st := p.status()
	d := overviewDoc{Status: st, IntervalSeconds: p.opts.SampleInterval.Seconds()}
	if p.opts.Storage != nil {
		used, quota := p.opts.Storage()
		d.StorageUsed, d.StorageQuota = &used, quota
	}
	objs := p.allObjects()
	d.Resources = len(objs)
	var used int64
	if d.StorageUsed != nil {
		used = *d.StorageUsed
	}
	d.Verdict = judge(st, used, d.StorageQuota, objs)
	return d
}

func (p *Portal) overview(w http.ResponseWriter, _ *http.Request, _ *login) {
	d := p.overviewNow()
	d.Samples, _ = p.hist.samples()
	writeJSON(w, http.StatusOK, d)
}

// overviewEvents streams the overview: everything with the hour of
// samples first ("init"), then each new sample with the status ("sample").
func (p *Portal) overviewEvents(w http.ResponseWriter, r *http.Request, _ *login) {
	s := newSSE(w)
	d := p.overviewNow()
	var next <-chan struct{}
	d.Samples, next = p.hist.samples()
	if d.Samples == nil {
		d.Samples = []Sample{}
	}
	if s.send("init", d) != nil {
		return
	}
	for p.wait(r, s, next) {
		var smp Sample
		var ok bool
		smp, ok, next = p.hist.latest()
		if !ok {
			continue
		}
		d := p.overviewNow()
		d.Samples = []Sample{smp}
		if s.send("sample", d) != nil {
			return
		}
	}
}

// maxSessionsShown bounds the clients page's list.
const maxSessionsShown = 2000

type clientsDoc struct {
	Sessions []broker.SessionInfo `json:"sessions"`
	Total    int                  `json:"total"`
}

func (p *Portal) clientsNow() clientsDoc {
	if p.opts.Broker == nil {
		return clientsDoc{Sessions: []broker.SessionInfo{}}
	}
	all := p.opts.Broker.Sessions()
	return clientsDoc{Sessions: all[:min(len(all), maxSessionsShown)], Total: len(all)}
}

func (p *Portal) clients(w http.ResponseWriter, _ *http.Request, _ *login) {
	writeJSON(w, http.StatusOK, p.clientsNow())
}

// clientEvents streams the session list when it changes, checked every
// two seconds.
func (p *Portal) clientEvents(w http.ResponseWriter, r *http.Request, _ *login) {
	s := newSSE(w)
	var last []byte
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		doc := p.clientsNow()
		data, _ := json.Marshal(doc)
		if !bytes.Equal(data, last) {
			if s.send("clients", doc) != nil {
				return
			}
			last = data
		}
		select {
		case <-r.Context().Done():
			return
		case <-p.done:
			return
		case <-t.C:
		}
	}
}

type clientRequest struct {
	ClientID string `json:"clientId"`
}

func readClientID(w http.ResponseWriter, r *http.Request) (string, bool) {
	var req clientRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil || req.ClientID == "" {
		writeJSONError(w, http.StatusBadRequest, `send {"clientId": "..."}`, nil)
		return "", false
	}
	return req.ClientID, true
}

func (p *Portal) disconnect(w http.ResponseWriter, r *http.Request, l *login) {
	id, ok := readClientID(w, r)
	if !ok || p.opts.Broker == nil {
		return
	}
	if !p.opts.Broker.DisconnectClient(id, packet.AdministrativeAction, "disconnected by an operator in the portal") {
		writeJSONError(w, http.StatusNotFound, fmt.Sprintf("client %q is not connected", id), nil)
		return
	}
	p.log.Info("portal: client disconnected", "client", id, "by", l.user)
	writeJSON(w, http.StatusOK, map[string]string{"result": "disconnected"})
}

func (p *Portal) deleteSession(w http.ResponseWriter, r *http.Request, l *login) {
	id, ok := readClientID(w, r)
	if !ok || p.opts.Broker == nil {
		return
	}
	switch err := p.opts.Broker.DeleteSession(id); {
	case errors.Is(err, broker.ErrNoSession):
		writeJSONError(w, http.StatusNotFound, fmt.Sprintf("no session %q", id), nil)
	case errors.Is(err, broker.ErrSessionOnline):
		writeJSONError(w, http.StatusConflict, err.Error(), nil)
	case err != nil:
		writeJSONError(w, http.StatusInternalServerError, err.Error(), nil)
	default:
		p.log.Info("portal: session deleted", "client", id, "by", l.user)
		writeJSON(w, http.StatusOK, map[string]string{"result": "deleted"})
	}
}

// topicEvents streams the topic tree: a snapshot, then at most one update
// a second with what changed.
func (p *Portal) topicEvents(w http.ResponseWriter, r *http.Request, _ *login) {
	if p.topic == nil {
		writeJSONError(w, http.StatusNotFound, "the topic browser is not available", nil)
		return
	}
	stop, err := p.topic.watch(r.Context())
	if err != nil {
		writeJSONError(w, http.StatusServiceUnavailable, err.Error(), nil)
		return
	}
	defer stop()
	s := newSSE(w)
	var ver uint64
	for {
		d, next := p.topic.since(ver)
		if d.Full || len(d.Topics) > 0 {
			if s.send("topics", d) != nil {
				return
			}
		}
		ver = d.Version
		if !p.wait(r, s, next) {
			return
		}
	}
}

func (p *Portal) topicMessage(w http.ResponseWriter, r *http.Request, _ *login) {
	name := r.URL.Query().Get("name")
	if p.topic == nil {
		writeJSONError(w, http.StatusNotFound, "the topic browser is not available", nil)
		return
	}
	m, ok := p.topic.message(name)
	if !ok {
		writeJSONError(w, http.StatusNotFound, fmt.Sprintf("no message seen on %q", name), nil)
		return
	}
	writeJSON(w, http.StatusOK, m)
}

// kindDoc lists a kind and its resources with their Ready condition.
type kindDoc struct {
	Kind   string        `json:"kind"`
	Plural string        `json:"plural"`
	Items  []resourceRow `json:"items"`
}

type resourceRow struct {
	Name       string            `json:"name"`
	Ready      string            `json:"ready"` // True, False, Unknown or "" without a condition
	Reason     string            `json:"reason,omitempty"`
	Message    string            `json:"message,omitempty"`
	Generation int64             `json:"generation"`
	Observed   int64             `json:"observedGeneration"`
	Source     string            `json:"source,omitempty"` // config file, or "" for the API
	Columns    map[string]string `json:"columns,omitempty"`
	Created    *time.Time        `json:"created,omitempty"`
}

// kinds lists every kind (or those named by ?kinds=) with its resources.
func (p *Portal) kinds(w http.ResponseWriter, r *http.Request, _ *login) {
	out := []kindDoc{}
	if p.opts.Resources == nil {
		writeJSON(w, http.StatusOK, out)
		return
	}
	want := map[string]bool{}
	for k := range strings.SplitSeq(r.URL.Query().Get("kinds"), ",") {
		if k != "" {
			want[k] = true
		}
	}
	for _, d := range p.opts.Resources.Kinds().All() {
		if len(want) > 0 && !want[d.Kind] {
			continue
		}
		kd := kindDoc{Kind: d.Kind, Plural: d.Plural, Items: []resourceRow{}}
		for _, o := range p.opts.Resources.List(d.Kind, config.Selector{}) {
			row := resourceRow{Name: o.Metadata.Name, Generation: o.Metadata.Generation, Created: o.Metadata.CreationTimestamp,
				Source: o.Metadata.Annotations[config.AnnotationConfigFile]}
			if o.Status != nil {
				row.Observed = o.Status.ObservedGeneration
				for _, c := range o.Status.Conditions {
					if c.Type == config.ConditionReady {
						row.Ready, row.Reason, row.Message = c.Status, c.Reason, c.Message
					}
				}
			}
			if len(d.Columns) > 0 {
				row.Columns = map[string]string{}
				for _, c := range d.Columns {
					row.Columns[c.Header] = c.Value(o)
				}
			}
			kd.Items = append(kd.Items, row)
		}
		out = append(out, kd)
	}
	writeJSON(w, http.StatusOK, out)
}

// yaml returns a resource as the YAML to edit: apiVersion, kind, the
// user's metadata (name, labels, annotations) and spec.
func (p *Portal) yaml(w http.ResponseWriter, r *http.Request, _ *login) {
	if p.opts.Resources == nil {
		writeJSONError(w, http.StatusNotFound, "no resources", nil)
		return
	}
	def := p.opts.Resources.Kinds().Lookup(r.PathValue("plural"))
	if def == nil {
		writeJSONError(w, http.StatusNotFound, fmt.Sprintf("unknown resource type %q", r.PathValue("plural")), nil)
		return
	}
	o, ok := p.opts.Resources.Get(config.Key{Kind: def.Kind, Name: r.PathValue("name")})
	if !ok {
		writeJSONError(w, http.StatusNotFound, fmt.Sprintf("%s %q not found", def.Kind, r.PathValue("name")), nil)
		return
	}
	ann := map[string]string{}
	for k, v := range o.Metadata.Annotations {
		if k != config.AnnotationConfigFile {
			ann[k] = v
		}
	}
	edit := struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name        string            `json:"name"`
			Labels      map[string]string `json:"labels,omitempty"`
			Annotations map[string]string `json:"annotations,omitempty"`
		} `json:"metadata"`
		Spec any `json:"spec"`
	}{APIVersion: o.APIVersion, Kind: o.Kind, Spec: o.Spec}
	edit.Metadata.Name, edit.Metadata.Labels, edit.Metadata.Annotations = o.Metadata.Name, o.Metadata.Labels, ann
	data, err := json.Marshal(edit)
	if err == nil {
		data, err = config.JSONToYAML(data)
	}
	if err != nil {
		writeJSONError(w, http.StatusInternalServerError, err.Error(), nil)
		return
	}
	w.Header().Set("Content-Type", "application/yaml; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(data)
}

// proxyAPI serves /ui/api/v1/... with the REST API itself, as a client
// holding the token: the answers, validation errors included, are the
// API's own.
func (p *Portal) proxyAPI(w http.ResponseWriter, r *http.Request, _ *login) {
	if p.opts.API == nil {
		writeJSONError(w, http.StatusNotFound, "the REST API is not available", nil)
		return
	}
	r2 := r.Clone(r.Context())
	r2.URL.Path = strings.TrimPrefix(r.URL.Path, "/ui")
	r2.URL.RawPath = ""
	r2.RequestURI = ""
	r2.Header.Del("Cookie")
	r2.Header.Del(CSRFHeader)
	r2.Header.Set("Authorization", "Bearer "+p.opts.Token)
	p.opts.API.ServeHTTP(w, r2)
}

func (p *Portal) stateList(w http.ResponseWriter, r *http.Request, _ *login) {
	if p.cl == nil {
		writeJSONError(w, http.StatusNotFound, "the state store page is not available", nil)
		return
	}
	keys, next, err := p.state.list(r.Context(), r.URL.Query().Get("prefix"), r.URL.Query().Get("cursor"))
	if err != nil {
		writeJSONError(w, http.StatusBadGateway, err.Error(), nil)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"keys": keys, "next": next})
}

type stateRequest struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

func readState(w http.ResponseWriter, r *http.Request) (stateRequest, bool) {
	var req stateRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 4<<20)).Decode(&req); err != nil {
		writeJSONError(w, http.StatusBadRequest, `send {"key": "...", "value": "..."}`, nil)
		return req, false
	}
	if req.Key == "" {
		writeJSONError(w, http.StatusUnprocessableEntity, "key: required", []string{"key: required"})
		return req, false
	}
	return req, true
}

func (p *Portal) stateSet(w http.ResponseWriter, r *http.Request, l *login) {
	req, ok := readState(w, r)
	if !ok || p.cl == nil {
		return
	}
	ver, err := p.state.set(r.Context(), []byte(req.Key), []byte(req.Value))
	if err != nil {
		writeJSONError(w, http.StatusBadGateway, err.Error(), nil)
		return
	}
	p.log.Info("portal: state store key set", "key", req.Key, "by", l.user)
	writeJSON(w, http.StatusOK, map[string]string{"result": "set", "version": ver})
}

func (p *Portal) stateDelete(w http.ResponseWriter, r *http.Request, l *login) {
	req, ok := readState(w, r)
	if !ok || p.cl == nil {
		return
	}
	if err := p.state.del(r.Context(), []byte(req.Key)); err != nil {
		writeJSONError(w, http.StatusBadGateway, err.Error(), nil)
		return
	}
	p.log.Info("portal: state store key deleted", "key", req.Key, "by", l.user)
	writeJSON(w, http.StatusOK, map[string]string{"result": "deleted"})
}

func parseLevel(s string) slog.Level {
	var lv slog.Level
	if lv.UnmarshalText([]byte(s)) != nil {
		return slog.LevelDebug
	}
	return lv
}

func (p *Portal) logs(w http.ResponseWriter, r *http.Request, _ *login) {
	lines := []LogLine{}
	if p.opts.Logs != nil {
		after, _ := strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
		lines = append(lines, p.opts.Logs.Lines(parseLevel(r.URL.Query().Get("level")), after)...)
	}
	writeJSON(w, http.StatusOK, lines)
}

// logEvents streams log lines at ?level= or above, checked every second.
func (p *Portal) logEvents(w http.ResponseWriter, r *http.Request, _ *login) {
	if p.opts.Logs == nil {
		writeJSONError(w, http.StatusNotFound, "no log is kept", nil)
		return
	}
	level := parseLevel(r.URL.Query().Get("level"))
	s := newSSE(w)
	var after uint64
	t := time.NewTicker(time.Second)
	defer t.Stop()
	first := true
	for {
		lines := p.opts.Logs.Lines(level, after)
		if len(lines) > 0 || first {
			if lines == nil {
				lines = []LogLine{}
			}
			if s.send("logs", lines) != nil {
				return
			}
			if len(lines) > 0 {
				after = lines[len(lines)-1].Seq
			}
			first = false
		}
		select {
		case <-r.Context().Done():
			return
		case <-p.done:
			return
		case <-t.C:
		}
	}
}

func (p *Portal) bundle(w http.ResponseWriter, r *http.Request, l *login) {
	now := time.Now()
	var buf bytes.Buffer
	if err := p.writeBundle(r.Context(), &buf, now); err != nil {
		writeJSONError(w, http.StatusInternalServerError, err.Error(), nil)
		return
	}
	p.log.Info("portal: support bundle downloaded", "by", l.user, "bytes", buf.Len())
	w.Header().Set("Content-Type", "application/zip")
	w.Header().Set("Content-Disposition", `attachment; filename="edgeport-support-`+now.UTC().Format("20060102-150405")+`.zip"`)
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(buf.Bytes())
}
