package auth

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// WebhookAPIVersion is the version of Azure IoT Operations' custom
// authentication API the webhook method speaks.
const WebhookAPIVersion = "0.5.0"

// DefaultWebhookTimeout bounds one webhook call.
const DefaultWebhookTimeout = 5 * time.Second

// WebhookOptions configure the Custom method.
type WebhookOptions struct {
	Endpoint string
	Headers  map[string]string
	// TLS is the client's TLS configuration: trusted CAs of the webhook,
	// the broker's client certificate. nil: the system's CAs.
	TLS     *tls.Config
	Timeout time.Duration // default DefaultWebhookTimeout
	Log     *slog.Logger
	// Transport replaces the HTTP transport (tests); TLS is then ignored.
	Transport http.RoundTripper
}

// Webhook is the Custom method: the client's credentials go to an HTTPS
// endpoint speaking Azure IoT Operations' custom authentication API 0.5.0,
// which answers 200 (allowed, with attributes and an optional expiry) or
// 403 (denied, with the CONNACK reason). As in Azure IoT Operations every
// client's credentials apply, and a webhook that cannot be reached (or
// answers anything else) hands over to the next method; that is logged,
// once when it starts and once when it ends, with the endpoint, never the
// credentials.
type Webhook struct {
	endpoint string
	logURL   string // endpoint without user information, for the log
	headers  map[string]string
	client   *http.Client
	log      *slog.Logger

	mu       sync.Mutex
	down     bool
	lastWarn time.Time
}

var _ Method = (*Webhook)(nil)

// NewWebhook builds the method.
func NewWebhook(o WebhookOptions) (*Webhook, error) {
	u, err := url.Parse(o.Endpoint)
	if err != nil || u.Host == "" || u.Scheme != "https" && u.Scheme != "http" {
		return nil, fmt.Errorf("webhook endpoint %q is not a URL", o.Endpoint)
	}
	q := u.Query()
	q.Set("api-version", WebhookAPIVersion)
	u.RawQuery = q.Encode()
	if o.Timeout <= 0 {
		o.Timeout = DefaultWebhookTimeout
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	tr := o.Transport
	if tr == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = o.TLS
		tr = t
	}
	return &Webhook{endpoint: u.String(), logURL: u.Redacted(), headers: o.Headers, log: o.Log,
		client: &http.Client{Timeout: o.Timeout, Transport: tr, CheckRedirect: noRedirect}}, nil
}

// noRedirect keeps credentials from following a redirect elsewhere.
func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// Name implements Method.
func (*Webhook) Name() string { return MethodCustom }

// Applies implements Method: the webhook decides about every client.
func (*Webhook) Applies(*broker.ConnectInfo) bool { return true }

// Close releases idle connections to the webhook.
func (w *Webhook) Close() { w.client.CloseIdleConnections() }

// webhookRequest is the request body: API 0.5.0's connect and auth
// requests. The enhanced authentication fields are Edgeport's additions
// (the API leaves them to the server), sent only when the client used it.
type webhookRequest struct {
	Type               string `json:"type"`
	Username           string `json:"username,omitempty"`
	Password           string `json:"password,omitempty"` // base64
	Certs              string `json:"certs,omitempty"`    // PEM chain
	AuthenticationMeth string `json:"authenticationMethod,omitempty"`
	AuthenticationData string `json:"authenticationData,omitempty"` // base64
}

type webhookPass struct {
	Expiry     string         `json:"expiry"`
	Attributes map[string]any `json:"attributes"`
}

type webhookFail struct {
	Reason  *int   `json:"reason"`
	Message string `json:"message"`
}

// Verify implements Method.
func (w *Webhook) Verify(ctx context.Context, ci *broker.ConnectInfo) (*broker.Principal, error) {
	body := webhookRequest{Type: "connect"}
	if ci.Reauth {
		body.Type = "auth"
	} else {
		if ci.HasUsername {
			body.Username = ci.Username
		}
		if ci.HasPassword {
			body.Password = base64.StdEncoding.EncodeToString(ci.Password)
		}
		if ci.TLS != nil && len(ci.TLS.PeerCertificates) > 0 {
			var b bytes.Buffer
			for _, c := range ci.TLS.PeerCertificates {
				_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
			}
			body.Certs = b.String()
		}
	}
	if ci.AuthMethod != "" {
		body.AuthenticationMeth = ci.AuthMethod
		body.AuthenticationData = base64.StdEncoding.EncodeToString(ci.AuthData)
	}
	data, err := json.Marshal(&body)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.endpoint, bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range w.headers {
		req.Header.Set(k, v)
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return nil, w.unreachable(stripURL(err))
	}
	defer resp.Body.Close()
	reply, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, w.unreachable(err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		var pass webhookPass
		if err := json.Unmarshal(reply, &pass); err != nil {
			return nil, w.unreachable(fmt.Errorf("200 with a body that is not the API's: %w", err))
		}
		w.reachable()
		p := &broker.Principal{}
		if ci.HasUsername {
			p.Username = ci.Username
		}
		if pass.Expiry != "" {
			exp, err := time.Parse(time.RFC3339, pass.Expiry)
			if err != nil {
				return nil, w.unreachable(fmt.Errorf("expiry %q is not RFC 3339", pass.Expiry))
			}
			p.Expiry = exp
		}
		for k, v := range pass.Attributes {
			s, ok := attributeString(v)
			if !ok {
				continue
			}
			if p.Attributes == nil {
				p.Attributes = make(map[string]string, len(pass.Attributes))
			}
			p.Attributes[k] = s
		}
		return p, nil
	case http.StatusForbidden:
		w.reachable()
		var fail webhookFail
		_ = json.Unmarshal(reply, &fail)
		code := packet.NotAuthorized
		if fail.Reason != nil && connAckRefusal(*fail.Reason) {
			code = packet.ReasonCode(*fail.Reason)
		}
		why := "denied by the webhook"
		if fail.Message != "" {
			why += ": " + fail.Message
		}
		return nil, deny(MethodCustom, code, why)
	case http.StatusUnprocessableEntity:
		return nil, w.unreachable(fmt.Errorf("422: the webhook does not speak API version %s (it answered %s)", WebhookAPIVersion, strings.TrimSpace(string(reply))))
	}
	return nil, w.unreachable(fmt.Errorf("unexpected answer %s", resp.Status))
}

// connAckRefusal reports whether r is a reason MQTT 5 CONNACK can refuse
// with; the webhook's others become 0x87.
func connAckRefusal(r int) bool {
	switch packet.ReasonCode(r) {
	case packet.UnspecifiedError, packet.MalformedPacket, packet.ProtocolError, packet.ImplementationSpecificError,
		packet.UnsupportedProtocolVersion, packet.ClientIdentifierNotValid, packet.BadUserNameOrPassword,
		packet.NotAuthorized, packet.ServerUnavailable, packet.ServerBusy, packet.Banned,
		packet.BadAuthenticationMethod, packet.QuotaExceeded, packet.UseAnotherServer, packet.ServerMoved,
		packet.ConnectionRateExceeded:
		return r >= 0x80 && r <= 0xFF
	}
	return false
}

func attributeString(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), true
	case bool:
		return strconv.FormatBool(x), true
	}
	return "", false
}

// stripURL keeps the error of a failed call without repeating the URL
// (which the log names once).
func stripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// unreachable logs that the webhook cannot decide (at Warn, once when it
// starts failing and then at most every 30 s) and returns the error that
// hands the client to the next method.
func (w *Webhook) unreachable(err error) error {
	w.mu.Lock()
	now := time.Now()
	warn := !w.down || now.Sub(w.lastWarn) >= 30*time.Second
	w.down = true
	if warn {
		w.lastWarn = now
	}
	w.mu.Unlock()
	if warn {
		w.log.Warn("custom authentication webhook unavailable: clients fall through to the next authentication method",
			"endpoint", w.logURL, "err", err)
	}
	return unavailable(fmt.Errorf("custom authentication webhook: %w", err))
}

func (w *Webhook) reachable() {
	w.mu.Lock()
	was := w.down
	w.down = false
	w.mu.Unlock()
	if was {
		w.log.Info("custom authentication webhook reachable again", "endpoint", w.logURL)
	}
}
