package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/broker/listener"
	"github.com/edgeport/edgeport/internal/config"
)

const (
	// disconnectWait bounds how long removing a port waits for its clients
	// to be told and gone before their sockets are closed outright.
	disconnectWait = 2 * time.Second
	portStopWait   = 5 * time.Second
)

// portConfig is everything that makes a port what it is; a port whose
// portConfig did not change keeps running, with its clients.
type portConfig struct {
	addr     string // host:port to bind
	protocol string // listener.ProtocolTCP or listener.ProtocolWebSocket
	path     string
	origins  string // allowed origins, one per line (a string keeps portConfig comparable)
	maxConns int
	authn    string
	authz    string
	tls      string // "" or the TLS settings (tlsKey); certificate files changing do not change it
	tlsSpec  *config.ListenerTLS
	// requestClientCert asks TLS clients for a certificate, unverified,
	// when the spec asks none: for an X.509 authentication method.
	requestClientCert bool
}

func (c portConfig) allowedOrigins() []string {
	if c.origins == "" {
		return nil
	}
	return strings.Split(c.origins, "\n")
}

// same reports whether a port can keep running: authentication and
// authorization references change live, without a restart.
func (c portConfig) same(o portConfig) bool {
	c.tlsSpec, o.tlsSpec = nil, nil
	c.authn, c.authz, o.authn, o.authz = "", "", "", ""
	return c == o
}

// portRun is one running (or failed) port of a BrokerListener.
type portRun struct {
	name string // listener name: <resource>:<port>
	port int    // as in the spec (0: any)
	cfg  portConfig
	ln   *listener.Listener // nil when it failed
	// closeCert ends the background renewals of the port's certificate.
	closeCert func()
	err       error
	reason    string // why it failed: BindFailed, TLSError, ...
	field     string // where the port is set, for errors: "BrokerListener x spec.ports[1].port"
	b         *broker.Broker

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{} // handed to the broker and not yet ended
}

// ConnectionRejected lets the broker count what the port's listener refused.
func (p *portRun) ConnectionRejected(listener, reason string) {
	p.b.ConnectionRejected(listener, reason)
}

// ServeConn hands a connection to the broker, keeping track of it so that
// removing the port ends exactly its connections, even one accepted while
// the port was being removed.
func (p *portRun) ServeConn(conn net.Conn, name string) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		conn.Close()
		return
	}
	p.conns[conn] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.conns, conn)
		p.mu.Unlock()
	}()
	p.b.ServeConn(conn, name)
}

func (p *portRun) open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// close stops accepting; connections stay (the broker's shutdown drains them).
func (p *portRun) close(ctx context.Context) error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	if p.ln == nil {
		return nil
	}
	err := p.ln.Stop(ctx)
	p.closeCert() // no handshake is left to start a renewal
	return err
}

// remove stops the port and ends its connections: MQTT 5 clients are told
// why. It returns how many clients it disconnected.
func (p *portRun) remove(why string) int {
	ctx, cancel := context.WithTimeout(context.Background(), portStopWait)
	defer cancel()
	_ = p.close(ctx)
	n := p.open()
	deadline := time.Now().Add(disconnectWait)
	// A connection accepted just before the close may reach the broker
	// after a first DisconnectListener: repeat until none is left.
	for p.open() > 0 && time.Now().Before(deadline) {
		p.b.DisconnectListener(p.name, why)
		time.Sleep(5 * time.Millisecond)
	}
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	return n
}

// reconcileListener makes the running ports of a BrokerListener match its
// spec: unchanged ports keep running with their clients; changed ports are
// restarted and removed ports closed, with their clients disconnected.
func (r *resources) reconcileListener(k config.Key) {
	obj, exists := r.store.Get(k)
	r.portsMu.Lock()
	running := r.ports[k.Name]
	r.portsMu.Unlock()

	var spec *config.BrokerListenerSpec
	want := map[int]portConfig{}
	wantErr := map[int]error{}
	wantReason := map[int]string{}
	if exists {
		spec = obj.Spec.(*config.BrokerListenerSpec)
		for _, p := range spec.Ports {
			cfg, reason, err := r.portConfig(p)
			want[*p.Port] = cfg
			if err != nil {
				wantErr[*p.Port], wantReason[*p.Port] = err, reason
			}
		}
	}

	next := map[int]*portRun{}
	for port, run := range running {
		cfg, keep := want[port]
		if keep && run.ln != nil && wantErr[port] == nil && run.cfg.same(cfg) {
			r.portsMu.Lock()
			run.cfg.authn, run.cfg.authz = cfg.authn, cfg.authz
			r.portsMu.Unlock()
			next[port] = run
			continue
		}
		if run.ln == nil {
			continue // failed before: nothing to stop
		}
		why := fmt.Sprintf("listener %s removed", run.name)
		if keep {
			why = fmt.Sprintf("listener %s changed", run.name)
		}
		n := run.remove(why)
		r.log.Info("listener port closed", "listener", run.name, "reason", why, "clients", n)
		if exists {
			r.store.Event(k, config.EventNormal, "PortClosed", fmt.Sprintf("%s; %d clients disconnected", why, n))
		}
	}
	if !exists {
		r.portsMu.Lock()
		delete(r.ports, k.Name)
		r.portsMu.Unlock()
		return
	}
	// Security first: a port must not accept a client before its
	// authentication is in force.
	var secNotes []string
	for _, p := range spec.Ports {
		if n := r.sec.apply(config.PortName(k.Name, *p.Port), p); n != "" {
			secNotes = append(secNotes, n)
		}
	}
	for i, p := range spec.Ports {
		port := *p.Port
		if next[port] != nil {
			continue
		}
		run := &portRun{name: config.PortName(k.Name, port), port: port, cfg: want[port], b: r.a.broker,
			conns: map[net.Conn]struct{}{}, err: wantErr[port], reason: wantReason[port],
			field: fmt.Sprintf("BrokerListener %s spec.ports[%d].port", k.Name, i)}
		if run.err == nil {
			run.start(r)
		}
		next[port] = run
	}
	r.portsMu.Lock()
	r.ports[k.Name] = next
	r.portsMu.Unlock()
	r.listenerStatus(obj, spec, next, secNotes)
}

func (p *portRun) start(r *resources) {
	// Certificates are loaded (or issued) when a port starts, not at every
	// reconcile; a port that fails here is retried like one that failed to bind.
	tc, closeCert, err := r.serverTLS(p.name, p.cfg)
	if err != nil {
		closeCert()
		p.err, p.reason = err, "TLSError"
		r.failLog.Log(slog.LevelWarn, p.name, "listener port failed", "listener", p.name, "err", err)
		return
	}
	ln, err := listener.New(listener.Config{
		Name: p.name, Addr: p.cfg.addr, Protocol: p.cfg.protocol, Path: p.cfg.path,
		TLS: tc, MaxConnections: p.cfg.maxConns, Guard: r.a.guard, AllowedOrigins: p.cfg.allowedOrigins(),
	}, p, r.log.With("component", "listener"))
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), portStopWait)
		err = ln.Start(ctx)
		cancel()
	}
	if err != nil {
		closeCert()
		p.err, p.reason = unwrapListen(err), "BindFailed"
		if errors.Is(err, syscall.EADDRINUSE) {
			p.err = fmt.Errorf("%w; choose another port in %s", p.err, p.field)
		}
		r.failLog.Log(slog.LevelWarn, p.name, "listener port failed", "listener", p.name, "err", err)
		return
	}
	r.failLog.Reset(p.name)
	r.log.Info("listening", "listener", p.name, "addr", ln.Addr().String(), "protocol", p.cfg.protocol, "tls", tc != nil)
	p.ln, p.closeCert = ln, closeCert
}

// unwrapListen keeps the operating system's words: "listen tcp
// 127.0.0.1:1883: bind: address already in use".
func unwrapListen(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe
	}
	return err
}

// portConfig resolves a spec port into what a listener needs. A failure
// names its reason for the status.
func (r *resources) portConfig(p config.ListenerPort) (portConfig, string, error) {
	cfg := portConfig{
		addr:     net.JoinHostPort(p.Address, strconv.Itoa(*p.Port)),
		protocol: listener.ProtocolTCP,
		maxConns: p.MaxConnections,
		authn:    p.AuthenticationRef,
		authz:    p.AuthorizationRef,
		// An X509 method needs the client's certificate.
		requestClientCert: r.sec.wantsClientCert(p.AuthenticationRef),
	}
	if p.Protocol == config.ProtocolWebSockets {
		cfg.protocol, cfg.path = listener.ProtocolWebSocket, p.Path
		cfg.origins = strings.Join(p.AllowedOrigins, "\n")
	}
	if p.TLS != nil {
		cfg.tls, cfg.tlsSpec = tlsKey(p.TLS), p.TLS
	}
	return cfg, "", nil
}

// listenerStatus reports each port and the resource's readiness.
func (r *resources) listenerStatus(obj *config.Object, spec *config.BrokerListenerSpec, runs map[int]*portRun, secNotes []string) {
	var st config.Status
	var up, failures []string
	reason := ""
	for _, p := range spec.Ports {
		run := runs[*p.Port]
		ps := config.PortStatus{Port: *p.Port, Protocol: p.Protocol, Ready: run.ln != nil}
		if run.ln != nil {
			ps.Address = run.ln.Addr().String()
			up = append(up, ps.Address)
		} else {
			ps.Message = run.err.Error()
			failures = append(failures, fmt.Sprintf("port %d: %v", *p.Port, run.err))
			if reason == "" {
				reason = run.reason
			}
		}
		st.Ports = append(st.Ports, ps)
	}
	if len(failures) > 0 {
		r.setStatus(obj, st, false, reason, strings.Join(failures, "; "))
		return
	}
	msg := "listening on " + strings.Join(up, ", ")
	for _, n := range secNotes {
		msg += "; " + n
	}
	// A port that refuses every client is bound but serves nobody: not
	// Ready, so that `get` and the portal show it (its note says why).
	for _, p := range spec.Ports {
		if r.a.broker.ListenerAdmission(config.PortName(obj.Metadata.Name, *p.Port)) == broker.AdmitsNobody {
			r.setStatus(obj, st, false, "AdmitsNobody", msg)
			return
		}
	}
	r.setStatus(obj, st, true, "Listening", msg)
}
