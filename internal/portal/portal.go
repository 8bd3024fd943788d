// Package portal is Edgeport's operations portal: web pages served from
// the binary on the HTTP address, with live data over Server-Sent Events.
package portal

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeport/edgeport/internal/api"
	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/lifecycle"
	"github.com/edgeport/edgeport/internal/mqtt/client"
	"github.com/edgeport/edgeport/internal/telemetry"
)

//go:embed web
var webFS embed.FS

// ClientID is the portal's in-process MQTT client.
const ClientID = "$edgeport/portal"

// DefaultSampleInterval is the overview charts' resolution.
const DefaultSampleInterval = 5 * time.Second

// Options configure the portal. Everything but Token and Status is
// optional: a page whose source is missing says so.
type Options struct {
	// Token is the API token, which logs in.
	Token string
	// RequireToken says the HTTP address is beyond loopback. Otherwise, as
	// for the API, only requests naming a loopback host are served (against
	// DNS rebinding).
	RequireToken bool
	// API is the REST API handler; the pages' script reaches it through
	// /ui/api/v1/, where the portal checks the session and CSRF token and
	// calls it with the bearer token, so that applies, validation errors
	// and deletes are the API's own.
	API       http.Handler
	Broker    *broker.Broker
	Resources *config.Store
	// Status is what /statusz serves.
	Status func() telemetry.Status
	// Storage returns the store's disk use and quota (0: none); nil
	// without a store.
	Storage  func() (used, quota int64)
	Gatherer prometheus.Gatherer
	Logs     *LogRing
	// Serve connects an in-process client to the broker (the topic
	// browser and the state store page); nil leaves them out.
	Serve func(net.Conn)
	// Check runs edgeport check against this instance and returns its
	// JSON report, for the support bundle.
	Check          func(ctx context.Context) ([]byte, error)
	Log            *slog.Logger
	SampleInterval time.Duration
	MaxTopics      int
}

// Portal serves the pages and their data. It is a lifecycle component:
// Start runs the chart sampler and the portal's MQTT client, Stop ends
// them and every live stream.
type Portal struct {
	opts  Options
	log   *slog.Logger
	mux   *http.ServeMux
	tmpl  map[string]*template.Template
	sess  *sessions
	hist  *history
	cl    *client.Client // nil without Serve
	topic *topicWatcher  // nil without Serve
	state stateClient

	mu      sync.Mutex    // guards started, stopped
	done    chan struct{} // closed by Stop: live streams end
	wg      sync.WaitGroup
	started bool
	stopped bool
}

var _ lifecycle.Component = (*Portal)(nil)

// New builds the portal; nothing runs before Start.
func New(opts Options) (*Portal, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.SampleInterval <= 0 {
		opts.SampleInterval = DefaultSampleInterval
	}
	if opts.Status == nil {
		return nil, errors.New("portal: Options.Status is required")
	}
	p := &Portal{opts: opts, log: opts.Log, sess: newSessions(), hist: newHistory(opts.SampleInterval), done: make(chan struct{})}
	if err := p.parseTemplates(); err != nil {
		return nil, err
	}
	if opts.Serve != nil {
		cl, err := client.New(client.Options{
			Dialer: client.NewInProcess(opts.Serve), ClientID: ClientID, CleanStart: true,
			Logger: opts.Log.With("component", "portal-client"),
		})
		if err != nil {
			return nil, err
		}
		p.cl = cl
		p.topic = newTopicWatcher(cl, opts.MaxTopics)
		p.state = stateClient{cl: cl}
	}
	p.routes()
	return p, nil
}

// Start takes the first sample and starts the sampler and the client.
func (p *Portal) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started {
		return errors.New("portal: already started")
	}
	if p.cl != nil {
		if err := p.cl.Start(ctx); err != nil {
			return fmt.Errorf("portal: starting its MQTT client: %w", err)
		}
	}
	p.started = true
	p.sample(time.Now())
	p.wg.Add(1)
	go p.run()
	return nil
}

// Stop ends the live streams, the sampler and the client.
func (p *Portal) Stop(ctx context.Context) error {
	p.mu.Lock()
	if !p.started || p.stopped {
		p.mu.Unlock()
		return nil
	}
	p.stopped = true
	close(p.done)
	p.mu.Unlock()
	p.wg.Wait()
	if p.cl != nil {
		return p.cl.Stop(ctx)
	}
	return nil
}

// run samples for the charts and ticks the topic browser's rates.
func (p *Portal) run() {
	defer p.wg.Done()
	sample := time.NewTicker(p.opts.SampleInterval)
	defer sample.Stop()
	second := time.NewTicker(time.Second)
	defer second.Stop()
	for {
		select {
		case <-p.done:
			return
		case now := <-sample.C:
			p.sample(now)
		case now := <-second.C:
			if p.topic != nil {
				p.topic.tick(now)
			}
		}
	}
}

func (p *Portal) sample(now time.Time) {
	st := p.opts.Status()
	var storage *int64
	if p.opts.Storage != nil {
		used, _ := p.opts.Storage()
		storage = &used
	}
	p.hist.take(now, st, storage)
}

func (p *Portal) status() telemetry.Status { return p.opts.Status() }

// ServeHTTP serves the portal under the security headers and the host rule.
func (p *Portal) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	// Strict: only this origin's own files; no inline script or style, no
	// framing, no plugins; forms post only here.
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin") // no-referrer would make forms send Origin: null
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
	if r.TLS != nil {
		h.Set("Strict-Transport-Security", "max-age=31536000")
	}
	if !p.opts.RequireToken && !api.LoopbackHost(r) {
		// The same rule as the API's: on a loopback address only pages
		// that name a loopback host are served (DNS rebinding).
		http.Error(w, fmt.Sprintf("host %q is not a loopback address: open the portal at http://127.0.0.1 or http://localhost", r.Host), http.StatusForbidden)
		return
	}
	p.mux.ServeHTTP(w, r)
}

// staticFS is the web/static folder.
func staticFS() fs.FS {
	sub, err := fs.Sub(webFS, "web/static")
	if err != nil {
		panic(err) // embedded at build time
	}
	return sub
}

// requestLogin is the logged-in browser of r, or nil.
func (p *Portal) requestLogin(r *http.Request) (*login, string) {
	c, err := r.Cookie(CookieName)
	if err != nil || c.Value == "" {
		return nil, ""
	}
	return p.sess.get(c.Value, time.Now()), c.Value
}

// authed wraps a handler that needs a logged-in browser; writes (any
// method but GET and HEAD) also need the session's CSRF token and a
// same-origin request.
func (p *Portal) authed(page bool, h func(w http.ResponseWriter, r *http.Request, l *login)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		l, _ := p.requestLogin(r)
		if l == nil {
			if page {
				http.Redirect(w, r, "/login?next="+pathOnly(r.URL.Path), http.StatusSeeOther)
				return
			}
			writeJSONError(w, http.StatusUnauthorized, "not logged in (or the session expired): log in again", nil)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			tok := r.Header.Get(CSRFHeader)
			if tok == "" {
				tok = r.PostFormValue(csrfField)
			}
			if !sameOrigin(r) || !checkToken(tok, l.csrf) {
				writeJSONError(w, http.StatusForbidden, "missing or wrong CSRF token: reload the page", nil)
				return
			}
		}
		h(w, r, l)
	}
}

// pathOnly keeps a redirect target on this server.
func pathOnly(p string) string {
	if !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") || strings.ContainsAny(p, "\\\r\n") {
		return "/"
	}
	return p
}
