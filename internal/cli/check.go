package cli

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/mqtt/client"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/telemetry"
)

// Check outcomes, worst last.
const (
	statusOK   = "ok"
	statusWarn = "warn"
	statusFail = "fail"
)

// Thresholds of the storage and self-test checks. Free space is judged by
// ratio and amount together: a 10% rule alone warns about 25 GiB free on a
// 250 GiB disk (what a broker holding sessions and retained messages never
// needs), and an amount alone misses a small edge card filling up.
const (
	storageWarnFree      = 0.10     // warn below 10% free ...
	storageWarnFreeBytes = 10 << 30 // ... that is also under 10 GiB
	storageFailFree      = 0.02     // fail below 2% free ...
	storageFailFreeBytes = 2 << 30  // ... that is also under 2 GiB
	selfTestWarnSlow     = 50 * time.Millisecond
)

// checkResult is one check, or one item of a check (a listener, a resource).
type checkResult struct {
	Name    string         `json:"name"`
	Status  string         `json:"status"`
	Message string         `json:"message"`
	Hint    string         `json:"hint,omitempty"`
	Details map[string]any `json:"details,omitempty"`
	Items   []checkResult  `json:"items,omitempty"`
}

// checkReport is what `edgeport check -o json` prints.
type checkReport struct {
	Server  string        `json:"server"`
	Status  string        `json:"status"`
	Summary checkSummary  `json:"summary"`
	Checks  []checkResult `json:"checks"`
}

type checkSummary struct {
	OK   int `json:"ok"`
	Warn int `json:"warn"`
	Fail int `json:"fail"`
}

func worse(a, b string) string {
	rank := map[string]int{statusOK: 0, statusWarn: 1, statusFail: 2}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

type checkOptions struct {
	api     clientFlags
	mqtt    mqttFlags
	server  string // resolved from api
	token   string // resolved from api
	detail  int
	output  string
	timeout time.Duration
	kube    kubeFlags
}

func newCheck(stdout io.Writer) *cobra.Command {
	o := checkOptions{}
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Evaluate a running Edgeport: listeners, storage, self-test, resources, security",
		Long: `Evaluate a running Edgeport instance through its HTTP endpoint: every MQTT
listener must accept an MQTT connection (with the credentials and TLS
settings given, as for edgeport pub and sub), the data directory must be writable
with free space, the self-test probe must deliver in time, resources must be
Ready, and authentication and authorization must guard non-loopback listeners.

--detail-level 0 prints one summary line, 1 one line per check (and the items
that are not ok), 2 every item with its details. Marks are ✔ ⚠ ✖ on a
terminal and [ok] [warn] [fail] otherwise. The exit status is 1 when any
check fails; warnings alone exit 0.

--kubernetes evaluates a release of the Helm chart through the Kubernetes
API instead (--kubeconfig, --context, --namespace, --release): its Helm
revision, that its pods are ready, its volume claims bound, its Services
have ready endpoints, and that Edgeport's custom resources in the namespace
are Ready.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.detail < 0 || o.detail > 2 {
				return fmt.Errorf("--detail-level: %d is not 0, 1 or 2", o.detail)
			}
			if o.output != "table" && o.output != "json" {
				return fmt.Errorf("-o: %q is not table or json", o.output)
			}
			if o.kube.enabled {
				return writeReport(stdout, runKubeChecks(cmd.Context(), o.kube, o.timeout), o)
			}
			var err error
			if o.server, o.token, err = o.api.resolve(); err != nil {
				return err
			}
			if _, err := url.Parse(o.server); err != nil {
				return fmt.Errorf("--server: %q is not a URL", o.server)
			}
			if _, err := o.mqtt.protocolVersion(); err != nil {
				return err
			}
			return writeReport(stdout, runChecks(cmd.Context(), o), o)
		},
	}
	f := cmd.Flags()
	o.api.add(cmd)
	o.mqtt.add(f, false)
	f.IntVar(&o.detail, "detail-level", 1, "0 summary, 1 per check, 2 with details")
	f.StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	f.DurationVar(&o.timeout, "timeout", 5*time.Second, "timeout of each request and connection attempt")
	f.BoolVar(&o.kube.enabled, "kubernetes", false, "evaluate an installed Helm release through the Kubernetes API instead of --server")
	f.StringVar(&o.kube.kubeconfig, "kubeconfig", "", "kubeconfig file for --kubernetes (default: $KUBECONFIG, ~/.kube/config, or in-cluster)")
	f.StringVar(&o.kube.context, "context", "", "kubeconfig context for --kubernetes (default: the current one)")
	f.StringVarP(&o.kube.namespace, "namespace", "n", "", "namespace of the release for --kubernetes (default: the context's)")
	f.StringVar(&o.kube.release, "release", "edgeport", "Helm release name for --kubernetes")
	return cmd
}

// writeReport prints rep as o asks and turns a failed report into exit
// status 1.
func writeReport(stdout io.Writer, rep checkReport, o checkOptions) error {
	if o.output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return fmt.Errorf("writing the report: %w", err)
		}
	} else {
		printReport(stdout, rep, o.detail, useUnicodeMarks(stdout))
	}
	if rep.Status == statusFail {
		return exitError(1)
	}
	return nil
}

// runChecks evaluates the instance behind o.server.
func runChecks(ctx context.Context, o checkOptions) checkReport {
	rep := checkReport{Server: strings.TrimRight(o.server, "/")}
	hc := &http.Client{Timeout: o.timeout}
	var st telemetry.Status
	server := checkResult{Name: "server"}
	if err := getJSON(ctx, hc, rep.Server+"/statusz", o.token, &st); err != nil {
		server.Status, server.Message = statusFail, err.Error()
		server.Hint = "is edgeport serve running, and is --server its --http-addr?"
		if unauthorized(err) {
			server.Hint = tokenHint(o.token)
		}
		rep.add(server)
		return rep.finish()
	}
	server.Status = statusOK
	server.Message = fmt.Sprintf("edgeport %s, up %s", st.Version, (time.Duration(st.UptimeSeconds) * time.Second).String())
	server.Details = map[string]any{"version": st.Version, "uptimeSeconds": st.UptimeSeconds,
		"connectedSessions": st.Broker.ConnectedSessions, "totalSessions": st.Broker.TotalSessions,
		"subscriptions": st.Broker.Subscriptions, "retainedMessages": st.Broker.RetainedMessages,
		"publishesReceived": st.Broker.PublishesReceived, "publishesSent": st.Broker.PublishesSent}
	if !st.Broker.Accepting {
		server.Status, server.Message = statusFail, "broker is shutting down"
	}
	rep.add(server)
	serverHost := ""
	if u, err := url.Parse(rep.Server); err == nil {
		serverHost = u.Hostname()
	}
	rep.add(checkListeners(ctx, st.Listeners, serverHost, o.timeout, &o.mqtt))
	rep.add(checkStorage(st.Storage))
	rep.add(checkSelfTest(st.SelfTest))
	if c, ok := checkCluster(st.Cluster); ok {
		rep.add(c)
	}
	rep.add(checkResources(ctx, hc, rep.Server, o.token))
	rep.add(checkConnectors(ctx, hc, rep.Server, o.token))
	rep.add(checkDataflows(ctx, hc, rep.Server, o.token))
	authn, authz := checkSecurity(st.Listeners)
	rep.add(authn)
	rep.add(authz)
	return rep.finish()
}

func (r *checkReport) add(c checkResult) { r.Checks = append(r.Checks, c) }

func (r checkReport) finish() checkReport {
	r.Status = statusOK
	for _, c := range r.Checks {
		switch c.Status {
		case statusOK:
			r.Summary.OK++
		case statusWarn:
			r.Summary.Warn++
		default:
			r.Summary.Fail++
		}
		r.Status = worse(r.Status, c.Status)
	}
	return r
}

func getJSON(ctx context.Context, hc *http.Client, u, token string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // it would repeat the method and URL
		}
		return fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("GET %s: reading the body: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return &httpStatusError{url: u, code: resp.StatusCode}
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("GET %s: decoding: %w", u, err)
	}
	return nil
}

// unauthorized reports an HTTP 401 or 403 answer.
func unauthorized(err error) bool {
	var se *httpStatusError
	return errors.As(err, &se) && (se.code == http.StatusUnauthorized || se.code == http.StatusForbidden)
}

func tokenHint(token string) string {
	if token == "" {
		return "the API requires a token: pass --token, set " + envToken + ", or --data-dir pointing at the server's data directory (edgeport token prints it)"
	}
	return "the token was refused: check --token, " + envToken + " or the api-token file in --data-dir (edgeport token prints the server's)"
}

type httpStatusError struct {
	url  string
	code int
}

func (e *httpStatusError) Error() string {
	return fmt.Sprintf("GET %s: %d %s", e.url, e.code, http.StatusText(e.code))
}

// checkListeners connects to every MQTT listener and expects a CONNACK.
func checkListeners(ctx context.Context, ls []telemetry.ListenerInfo, serverHost string, timeout time.Duration, creds *mqttFlags) checkResult {
	res := checkResult{Name: "listeners", Status: statusOK}
	if len(ls) == 0 {
		res.Status, res.Message = statusWarn, "no MQTT listener is configured"
		res.Hint = "clients cannot connect; enable --mqtt-addr or --ws-addr"
		return res
	}
	ok := 0
	for _, l := range ls {
		item := checkListener(ctx, l, serverHost, timeout, creds)
		if item.Status == statusOK {
			ok++
		}
		res.Status = worse(res.Status, item.Status)
		res.Items = append(res.Items, item)
	}
	res.Message = fmt.Sprintf("%d of %d MQTT listeners accept connections", ok, len(ls))
	return res
}

func checkListener(ctx context.Context, l telemetry.ListenerInfo, serverHost string, timeout time.Duration, creds *mqttFlags) checkResult {
	item := checkResult{Name: l.Name, Details: map[string]any{"protocol": l.Protocol, "address": l.Address, "tls": l.TLS}}
	if l.Admits != "" {
		item.Details["admits"] = l.Admits
	}
	if l.Address == "" {
		where := l.Configured
		if where == "" {
			where = "its address"
		}
		item.Details["configured"] = l.Configured
		item.Status = statusFail
		if l.Error != "" {
			item.Message = fmt.Sprintf("%s listener on %s is not bound: %s", l.Protocol, where, l.Error)
			item.Hint = "another process may hold the port: change the port, or stop that process"
		} else {
			item.Message = fmt.Sprintf("%s listener on %s is not bound (yet)", l.Protocol, where)
		}
		return item
	}
	addr := dialAddress(l.Address, serverHost)
	where := l.Protocol + " " + addr + l.Path
	item.Details["dialed"] = addr
	start := time.Now()
	code, err := mqttPing(ctx, l, addr, timeout, creds)
	elapsed := time.Since(start)
	item.Details["latencyMs"] = float64(elapsed.Microseconds()) / 1000
	switch {
	case err != nil:
		item.Status, item.Message = statusFail, fmt.Sprintf("%s: %v", where, err)
	case code == packet.Success:
		item.Status, item.Message = statusOK, fmt.Sprintf("%s: CONNACK success in %s", where, roundDuration(elapsed))
	case l.Admits == string(broker.AdmitsNobody):
		// It answers, and refuses everyone by configuration: not broken,
		// not open, and of no use until authentication is attached.
		item.Status, item.Message = statusWarn, fmt.Sprintf("%s: refuses every client (%v): no authentication is attached and anonymous access is off", where, code)
		item.Hint = "attach a BrokerAuthentication (authenticationRef), set allowAnonymous, or bind the port to 127.0.0.1"
	case code == packet.NotAuthorized || code == packet.BadUserNameOrPassword:
		// The listener works and guards itself: exactly what it should do
		// for a client without (the right) credentials.
		item.Status, item.Message = statusOK, fmt.Sprintf("%s: answers, and requires credentials (%v)", where, code)
	default:
		item.Status, item.Message = statusFail, fmt.Sprintf("%s: CONNECT refused: %v", where, code)
	}
	return item
}

// dialAddress turns a bound address into one to dial: a wildcard host is
// reached through the host the HTTP endpoint was reached on.
func dialAddress(bound, serverHost string) string {
	host, port, err := net.SplitHostPort(bound)
	if err != nil {
		return bound
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = serverHost
		if host == "" || host == "localhost" {
			host = "127.0.0.1"
		}
	}
	return net.JoinHostPort(host, port)
}

func roundDuration(d time.Duration) time.Duration {
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond)
	case d < time.Second:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Millisecond)
}

// mqttPing connects to a listener with the internal client (clean
// session, the credentials and TLS settings of the flags), returns the
// CONNACK reason code and disconnects.
func mqttPing(ctx context.Context, l telemetry.ListenerInfo, addr string, timeout time.Duration, creds *mqttFlags) (packet.ReasonCode, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	host, _, _ := net.SplitHostPort(addr)
	tlsCfg, err := creds.tlsConfig(host)
	if err != nil {
		return 0, err
	}
	if l.TLS && tlsCfg == nil {
		if creds.username != "" || creds.password != "" || creds.token != "" {
			// Credentials go only to a broker whose certificate verifies.
			tlsCfg = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
		} else {
			// Without credentials an unverified certificate exposes
			// nothing; whether it is trusted is not what this measures.
			tlsCfg = &tls.Config{ServerName: host, InsecureSkipVerify: true} //nolint:gosec // see above
		}
	}
	var d client.Dialer
	switch {
	case l.Protocol == "websocket":
		scheme, path := "ws", l.Path
		if l.TLS {
			scheme = "wss"
		}
		if path == "" {
			path = "/mqtt"
		}
		d = client.WebSocket(scheme+"://"+addr+path, tlsCfg)
	case l.TLS:
		d = client.TCP(addr, tlsCfg)
	default:
		d = client.TCP(addr, nil)
	}
	o, err := creds.options(d)
	if err != nil {
		return 0, err
	}
	o.ClientID = "edgeport-check-" + o.ClientID[len("edgeport-cli-"):]
	o.ConnectTimeout, o.NoReconnect, o.KeepAlive = timeout, true, 30*time.Second
	c, err := client.New(o)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	err = c.Connect(ctx)
	var re *client.ReasonError
	if errors.As(err, &re) && re.Packet == packet.CONNACK {
		return re.Code, nil
	}
	if err != nil {
		return 0, err
	}
	return packet.Success, nil
}

func checkStorage(s *telemetry.StorageStatus) checkResult {
	res := checkResult{Name: "storage"}
	if s == nil {
		res.Status, res.Message = statusWarn, "the server reports no data directory"
		return res
	}
	res.Details = map[string]any{"path": s.Path, "totalBytes": s.TotalBytes, "freeBytes": s.FreeBytes, "writable": s.Writable}
	if !s.Writable {
		res.Status, res.Message = statusFail, fmt.Sprintf("%s is not writable: %s", s.Path, s.Error)
		res.Hint = "check the directory's owner and permissions and that the file system is not mounted read-only"
		return res
	}
	if s.TotalBytes == 0 {
		res.Status, res.Message = statusWarn, fmt.Sprintf("%s is writable; free space unknown (%s)", s.Path, s.Error)
		return res
	}
	free := float64(s.FreeBytes) / float64(s.TotalBytes)
	res.Details["freeRatio"] = free
	res.Message = fmt.Sprintf("%s writable, %s free of %s (%.0f%%)", s.Path, bytesIEC(s.FreeBytes), bytesIEC(s.TotalBytes), free*100)
	switch {
	case free < storageFailFree && s.FreeBytes < storageFailFreeBytes:
		res.Status = statusFail
		res.Hint = "free space below 2% and 2 GiB: persistent sessions and retained messages will soon be refused"
	case free < storageWarnFree && s.FreeBytes < storageWarnFreeBytes:
		res.Status = statusWarn
		res.Hint = "free space below 10% and 10 GiB"
	default:
		res.Status = statusOK
	}
	return res
}

func bytesIEC(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func checkSelfTest(p *telemetry.ProbeStatus) checkResult {
	res := checkResult{Name: "selftest"}
	if p == nil {
		res.Status, res.Message = statusWarn, "the self-test probe is disabled"
		res.Hint = "run edgeport serve with --selftest-interval 5s to measure delivery latency continuously"
		return res
	}
	last := time.Duration(p.LastLatencySeconds * float64(time.Second))
	res.Details = map[string]any{"runs": p.Runs, "failures": p.Failures, "consecutiveFailures": p.ConsecutiveFailures,
		"lastLatencyMs": p.LastLatencySeconds * 1000, "intervalSeconds": p.IntervalSeconds}
	if !p.LastRun.IsZero() {
		res.Details["lastRun"] = p.LastRun
	}
	switch {
	case p.Runs == 0:
		res.Status, res.Message = statusWarn, "the self-test has not completed a round yet"
	case p.ConsecutiveFailures > 0:
		res.Status = statusFail
		res.Message = fmt.Sprintf("failing for %d round(s): %s", p.ConsecutiveFailures, p.LastError)
		res.Hint = "the broker does not deliver its own test message: look at the server log"
	case last > selfTestWarnSlow:
		res.Status = statusWarn
		res.Message = fmt.Sprintf("publish-to-delivery latency %s (above %s)", roundDuration(last), selfTestWarnSlow)
		res.Hint = "the broker is saturated or the host is short of CPU"
	default:
		res.Status = statusOK
		res.Message = fmt.Sprintf("publish-to-delivery latency %s, %d failure(s) in %d rounds", roundDuration(last), p.Failures, p.Runs)
	}
	return res
}

// resourceKinds are the kinds whose Ready condition the check reads, by
// their API collection name.
var resourceKinds = []string{"brokers", "brokerlisteners", "brokerauthentications", "brokerauthorizations",
	"dataflowendpoints", "dataflowprofiles"}

// apiObject is the part of a resource the check reads.
type apiObject struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name       string `json:"name"`
		Generation int64  `json:"generation"`
	} `json:"metadata"`
	Status struct {
		ObservedGeneration int64          `json:"observedGeneration"`
		Conditions         []apiCondition `json:"conditions"`
	} `json:"status"`
}

// apiCondition is a status condition as the checks read it.
type apiCondition struct {
	Type    string `json:"type"`
	Status  string `json:"status"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

// checkResources reads every resource through the REST API and reports
// those that are not Ready.
func checkResources(ctx context.Context, hc *http.Client, server, token string) checkResult {
	res := checkResult{Name: "resources", Status: statusOK}
	total, ready, available := 0, 0, false
	for _, kind := range resourceKinds {
		var raw json.RawMessage
		err := getJSON(ctx, hc, server+"/api/v1/"+kind, token, &raw)
		var se *httpStatusError
		if errors.As(err, &se) && se.code == http.StatusNotFound {
			continue
		}
		if unauthorized(err) {
			// A token-protected API without (the right) token: the check
			// cannot judge the resources, and says so as a failure.
			res.Status, res.Message = statusFail, err.Error()
			res.Hint = tokenHint(token)
			return res
		}
		if err != nil {
			res.Status = statusWarn
			res.Items = append(res.Items, checkResult{Name: kind, Status: statusWarn, Message: err.Error()})
			available = true
			continue
		}
		available = true
		objs, err := decodeList(raw)
		if err != nil {
			res.Items = append(res.Items, checkResult{Name: kind, Status: statusWarn, Message: err.Error()})
			res.Status = worse(res.Status, statusWarn)
			continue
		}
		for _, obj := range objs {
			total++
			item := readiness(kind, obj)
			if item.Status == statusOK {
				ready++
			}
			res.Status = worse(res.Status, item.Status)
			res.Items = append(res.Items, item)
		}
	}
	if !available {
		res.Status, res.Message = statusWarn, "not available (the server has no /api/v1)"
		return res
	}
	res.Message = fmt.Sprintf("%d of %d resources Ready", ready, total)
	return res
}

// decodeList accepts a list as {"items": [...]} or as a bare array.
func decodeList(raw json.RawMessage) ([]apiObject, error) {
	var list struct {
		Items []apiObject `json:"items"`
	}
	if err := json.Unmarshal(raw, &list); err == nil {
		return list.Items, nil
	}
	var objs []apiObject
	if err := json.Unmarshal(raw, &objs); err != nil {
		return nil, fmt.Errorf("decoding the list: %w", err)
	}
	return objs, nil
}

func readiness(kind string, obj apiObject) checkResult {
	name := obj.Metadata.Name
	if obj.Kind != "" {
		name = obj.Kind + "/" + name
	} else {
		name = kind + "/" + name
	}
	item := checkResult{Name: name}
	for _, c := range obj.Status.Conditions {
		if c.Type != "Ready" {
			continue
		}
		item.Details = map[string]any{"reason": c.Reason, "generation": obj.Metadata.Generation, "observedGeneration": obj.Status.ObservedGeneration}
		switch {
		case c.Status != "True":
			item.Status, item.Message = statusFail, fmt.Sprintf("not Ready: %s: %s", c.Reason, c.Message)
		case obj.Status.ObservedGeneration < obj.Metadata.Generation:
			item.Status, item.Message = statusWarn, fmt.Sprintf("Ready, but generation %d is not applied yet", obj.Metadata.Generation)
		default:
			item.Status, item.Message = statusOK, "Ready"
		}
		return item
	}
	item.Status, item.Message = statusWarn, "no Ready condition yet"
	return item
}

// checkSecurity judges authentication and authorization per listener: open
// access is tolerable on loopback, not beyond it.
func checkSecurity(ls []telemetry.ListenerInfo) (authn, authz checkResult) {
	authn = checkResult{Name: "authentication", Status: statusOK}
	authz = checkResult{Name: "authorization", Status: statusOK}
	var anonLoop, anonOpen, openLoop, openWide []string
	for _, l := range ls {
		addr := l.Address
		if addr == "" {
			addr = l.Configured
		}
		loop := isLoopback(addr)
		if l.Admits == string(broker.AdmitsNobody) {
			// Refusing everyone is not anonymous access; the listener
			// check reports that the port is of no use as it stands.
			authn.Items = append(authn.Items, checkResult{Name: l.Name, Status: statusOK,
				Message: "refuses every client (no authentication attached, anonymous access off)",
				Details: map[string]any{"address": addr, "loopback": loop}})
			authz.Items = append(authz.Items, checkResult{Name: l.Name, Status: statusOK,
				Message: "nobody can connect", Details: map[string]any{"address": addr, "loopback": loop}})
			continue
		}
		if l.Authentication == "" {
			if loop {
				anonLoop = append(anonLoop, l.Name)
			} else {
				anonOpen = append(anonOpen, l.Name)
			}
		}
		if l.Authorization == "" {
			if loop {
				openLoop = append(openLoop, l.Name)
			} else {
				openWide = append(openWide, l.Name)
			}
		}
		authn.Items = append(authn.Items, securityItem(l.Name, addr, l.Authentication, loop, "anonymous access"))
		authz.Items = append(authz.Items, securityItem(l.Name, addr, l.Authorization, loop, "no authorization policy"))
	}
	switch {
	case len(anonOpen) > 0:
		authn.Status = statusFail
		authn.Message = "anonymous access on non-loopback listener(s): " + strings.Join(anonOpen, ", ")
		authn.Hint = "anyone on the network can connect: attach a BrokerAuthentication to the listener or bind it to 127.0.0.1"
	case len(anonLoop) > 0:
		authn.Status = statusWarn
		authn.Message = "anonymous access on loopback listener(s): " + strings.Join(anonLoop, ", ")
		authn.Hint = "fine for local clients; attach a BrokerAuthentication before exposing a listener beyond this host"
	default:
		authn.Message = "every listener requires authentication"
	}
	switch {
	case len(openWide) > 0:
		authz.Status = statusFail
		authz.Message = "no authorization policy on non-loopback listener(s): " + strings.Join(openWide, ", ")
		authz.Hint = "every client may publish and subscribe to every topic: attach a BrokerAuthorization"
	case len(openLoop) > 0:
		authz.Status = statusWarn
		authz.Message = "no authorization policy on loopback listener(s): " + strings.Join(openLoop, ", ")
		authz.Hint = "every local client may publish and subscribe to every topic; attach a BrokerAuthorization to restrict topics"
	default:
		authz.Message = "every listener has an authorization policy"
	}
	return authn, authz
}

func securityItem(name, addr, policy string, loop bool, none string) checkResult {
	item := checkResult{Name: name, Details: map[string]any{"address": addr, "loopback": loop}}
	switch {
	case policy != "":
		item.Status, item.Message = statusOK, policy
	case loop:
		item.Status, item.Message = statusWarn, none+" (loopback only)"
	default:
		item.Status, item.Message = statusFail, none+" on "+addr
	}
	return item
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// useUnicodeMarks reports whether w is a terminal: check marks read well
// there, while logs and CI output get plain ASCII.
func useUnicodeMarks(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func mark(status string, unicode bool) string {
	if unicode {
		switch status {
		case statusOK:
			return "✔"
		case statusWarn:
			return "⚠"
		}
		return "✖"
	}
	return fmt.Sprintf("%-6s", "["+status+"]") // aligned: [ok] is shorter than [warn]
}

// printReport writes the human-readable report at the given detail level.
func printReport(w io.Writer, rep checkReport, detail int, unicode bool) {
	width := 0
	for _, c := range rep.Checks {
		width = max(width, len(c.Name))
	}
	if detail >= 1 {
		for _, c := range rep.Checks {
			fmt.Fprintf(w, "%s %-*s  %s\n", mark(c.Status, unicode), width, c.Name, c.Message)
			if detail >= 2 || c.Status != statusOK {
				printItems(w, c.Items, detail, unicode)
				if c.Hint != "" {
					fmt.Fprintf(w, "    hint: %s\n", c.Hint)
				}
			}
			if detail >= 2 {
				printDetails(w, "    ", c.Details)
			}
		}
		fmt.Fprintln(w)
	}
	var names []string
	for _, c := range rep.Checks {
		if c.Status != statusOK {
			names = append(names, c.Name)
		}
	}
	line := fmt.Sprintf("%s %s: %d passed, %d warning(s), %d failed", mark(rep.Status, unicode), rep.Server,
		rep.Summary.OK, rep.Summary.Warn, rep.Summary.Fail)
	if detail == 0 && len(names) > 0 {
		line += " (" + strings.Join(names, ", ") + ")"
	}
	fmt.Fprintln(w, line)
}

func printItems(w io.Writer, items []checkResult, detail int, unicode bool) {
	width := 0
	for _, it := range items {
		width = max(width, len(it.Name))
	}
	for _, it := range items {
		if detail < 2 && it.Status == statusOK {
			continue
		}
		fmt.Fprintf(w, "    %s %-*s  %s\n", mark(it.Status, unicode), width, it.Name, it.Message)
		if detail >= 2 {
			printDetails(w, "        ", it.Details)
		}
	}
}

func printDetails(w io.Writer, indent string, d map[string]any) {
	keys := make([]string, 0, len(d))
	for k := range d {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "%s%s: %v\n", indent, k, d[k])
	}
}
