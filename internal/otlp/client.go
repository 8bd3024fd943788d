// Package otlp sends OpenTelemetry metrics and logs to a collector over
// OTLP/HTTP (protobuf) or OTLP/gRPC, classifying failures as the OTLP specification does.
//
// It is the transport of the OpenTelemetry dataflow destination and of the
// push of Edgeport's own metrics and logs. Data is built with the
// collector's pdata types; the client adds no queue and no retries of its
// own: callers decide (a dataflow retries until the collector accepts,
// the diagnostics push drops a failed interval).
package otlp

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Protocols.
const (
	ProtocolHTTP = "http"
	ProtocolGRPC = "grpc"
)

// Options say where and how to send.
type Options struct {
	// Protocol is ProtocolHTTP or ProtocolGRPC.
	Protocol string
	// Endpoint is, for HTTP, the base URL (http://host:4318, or with a
	// path prefix; /v1/metrics and /v1/logs are appended), and for gRPC
	// host:port.
	Endpoint string
	// Headers are sent with every export (HTTP headers or gRPC metadata).
	Headers map[string]string
	// TLS, when set, secures the connection (for HTTP the URL must be
	// https).
	TLS *tls.Config
	// Timeout bounds one export; 0 means 30 s.
	Timeout time.Duration
}

// ErrRejected marks a failure the OTLP specification says not to retry
// (HTTP 400, 401, 403, 404, 413 ..., gRPC InvalidArgument and the like,
// and data points the collector rejected in a partial success).
var ErrRejected = errors.New("rejected by the collector")

// Error is a failed export.
type Error struct {
	Retryable bool
	Err       error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrRejected) hold for non-retryable failures.
func (e *Error) Is(target error) bool { return target == ErrRejected && !e.Retryable }

// PartialError is a partial success: the collector took the request but
// rejected Rejected items (data points or log records) with Message.
type PartialError struct {
	Rejected int64
	Message  string
}

func (e *PartialError) Error() string {
	return fmt.Sprintf("the collector rejected %d items: %s", e.Rejected, e.Message)
}

// Is makes errors.Is(err, ErrRejected) hold.
func (e *PartialError) Is(target error) bool { return target == ErrRejected }

// Client exports to one collector.
type Client struct {
	opts Options
	http *http.Client
	conn *grpc.ClientConn
	mc   pmetricotlp.GRPCClient
	lc   plogotlp.GRPCClient
	md   metadata.MD
}

// NewClient checks the options and prepares the connection (gRPC dials
// lazily, on the first export).
func NewClient(o Options) (*Client, error) {
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	c := &Client{opts: o}
	switch o.Protocol {
	case ProtocolHTTP:
		if !strings.HasPrefix(o.Endpoint, "http://") && !strings.HasPrefix(o.Endpoint, "https://") {
			return nil, fmt.Errorf("OTLP/HTTP endpoint %q: must be an http:// or https:// URL", o.Endpoint)
		}
		tr := &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
			TLSClientConfig:     o.TLS,
			MaxIdleConnsPerHost: 2,
			IdleConnTimeout:     90 * time.Second,
		}
		c.http = &http.Client{Transport: tr, Timeout: o.Timeout}
		c.opts.Endpoint = strings.TrimRight(o.Endpoint, "/")
	case ProtocolGRPC:
		if _, _, err := net.SplitHostPort(o.Endpoint); err != nil {
			return nil, fmt.Errorf("OTLP/gRPC endpoint %q: must be host:port", o.Endpoint)
		}
		creds := insecure.NewCredentials()
		if o.TLS != nil {
			creds = credentials.NewTLS(o.TLS)
		}
		// gRPC's default reconnect backoff grows to two minutes; a
		// collector back from an outage should be used within seconds.
		bo := backoff.DefaultConfig
		bo.MaxDelay = 5 * time.Second
		conn, err := grpc.NewClient("passthrough:///"+o.Endpoint, grpc.WithTransportCredentials(creds),
			grpc.WithConnectParams(grpc.ConnectParams{Backoff: bo, MinConnectTimeout: 10 * time.Second}))
		if err != nil {
			return nil, fmt.Errorf("OTLP/gRPC endpoint %q: %w", o.Endpoint, err)
		}
		c.conn = conn
		c.mc = pmetricotlp.NewGRPCClient(conn)
		c.lc = plogotlp.NewGRPCClient(conn)
		c.md = metadata.MD{}
		for k, v := range o.Headers {
			c.md.Set(strings.ToLower(k), v)
		}
	default:
		return nil, fmt.Errorf("OTLP protocol %q: must be %s or %s", o.Protocol, ProtocolHTTP, ProtocolGRPC)
	}
	return c, nil
}

// ExportMetrics sends md. It returns nil when the collector accepted
// everything; a *PartialError when it accepted the request but rejected
// some data points; an *Error otherwise.
func (c *Client) ExportMetrics(ctx context.Context, md pmetric.Metrics) error {
	req := pmetricotlp.NewExportRequestFromMetrics(md)
	if c.conn != nil {
		ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(ctx, c.md), c.opts.Timeout)
		defer cancel()
		resp, err := c.mc.Export(ctx, req)
		if err != nil {
			return grpcError("metrics", err)
		}
		return partial(resp.PartialSuccess().RejectedDataPoints(), resp.PartialSuccess().ErrorMessage())
	}
	body, err := req.MarshalProto()
	if err != nil {
		return &Error{Err: fmt.Errorf("encoding metrics: %w", err)}
	}
	respBody, err := c.post(ctx, "/v1/metrics", body)
	if err != nil {
		return err
	}
	resp := pmetricotlp.NewExportResponse()
	if len(respBody) > 0 {
		if err := resp.UnmarshalProto(respBody); err != nil {
			// Accepted (2xx) with a body we cannot read: the data is
			// in; say so rather than resend it.
			return nil
		}
	}
	return partial(resp.PartialSuccess().RejectedDataPoints(), resp.PartialSuccess().ErrorMessage())
}

// ExportLogs sends ld, with the results of ExportMetrics.
func (c *Client) ExportLogs(ctx context.Context, ld plog.Logs) error {
	req := plogotlp.NewExportRequestFromLogs(ld)
	if c.conn != nil {
		ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(ctx, c.md), c.opts.Timeout)
		defer cancel()
		resp, err := c.lc.Export(ctx, req)
		if err != nil {
			return grpcError("logs", err)
		}
		return partial(resp.PartialSuccess().RejectedLogRecords(), resp.PartialSuccess().ErrorMessage())
	}
	body, err := req.MarshalProto()
	if err != nil {
		return &Error{Err: fmt.Errorf("encoding logs: %w", err)}
	}
	respBody, err := c.post(ctx, "/v1/logs", body)
	if err != nil {
		return err
	}
	resp := plogotlp.NewExportResponse()
	if len(respBody) > 0 {
		if err := resp.UnmarshalProto(respBody); err != nil {
			return nil
		}
	}
	return partial(resp.PartialSuccess().RejectedLogRecords(), resp.PartialSuccess().ErrorMessage())
}

func partial(rejected int64, msg string) error {
	if rejected > 0 {
		return &PartialError{Rejected: rejected, Message: msg}
	}
	return nil
}

// post sends one OTLP/HTTP request and returns the body of a 2xx answer.
// Per the OTLP specification 429, 502, 503 and 504 are retryable, every
// other 4xx or 5xx is not; a transport error is retryable.
func (c *Client) post(ctx context.Context, path string, body []byte) ([]byte, error) {
	u := c.opts.Endpoint + path
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return nil, &Error{Err: err}
	}
	for k, v := range c.opts.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, &Error{Retryable: true, Err: fmt.Errorf("POST %s: %w", u, err)}
	}
	defer resp.Body.Close()
	b, rerr := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if rerr != nil {
			return nil, nil
		}
		return b, nil
	}
	e := &Error{Err: fmt.Errorf("POST %s: %s: %s", u, resp.Status, statusMessage(b))}
	switch resp.StatusCode {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		e.Retryable = true
	}
	return nil, e
}

// statusMessage gives a short readable form of an error body (a
// google.rpc.Status in protobuf, or text).
func statusMessage(b []byte) string {
	if len(b) > 200 {
		b = b[:200]
	}
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(string(bytes.TrimSpace(b)), ""))
}

// grpcError classifies a gRPC status after the OTLP specification's list
// of retryable codes.
func grpcError(what string, err error) error {
	st, _ := status.FromError(err)
	e := &Error{Err: fmt.Errorf("exporting %s over gRPC: %s: %s", what, st.Code(), st.Message())}
	switch st.Code() {
	case codes.Canceled, codes.DeadlineExceeded, codes.Aborted, codes.OutOfRange,
		codes.Unavailable, codes.DataLoss, codes.ResourceExhausted:
		e.Retryable = true
	}
	return e
}

// Close releases the connections.
func (c *Client) Close() error {
	if c.conn != nil {
		return c.conn.Close()
	}
	c.http.CloseIdleConnections()
	return nil
}

// Resolve turns an endpoint as users write it into the client's protocol
// and endpoint: host:port (Azure IoT Operations' form) is OTLP/gRPC unless
// protocol is "http"; an http(s):// URL is OTLP/HTTP unless protocol is
// "grpc". tlsOn upgrades http:// to https://. serverName is the host for
// certificate verification.
func Resolve(host, protocol string, tlsOn bool) (proto, endpoint, serverName string, err error) {
	protocol = strings.ToLower(protocol)
	if strings.Contains(host, "://") {
		u, err := url.Parse(host)
		if err != nil {
			return "", "", "", err
		}
		if u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return "", "", "", fmt.Errorf("%q: must be host:port or an http(s):// URL", host)
		}
		if protocol == ProtocolGRPC {
			hp := u.Host
			if u.Port() == "" {
				hp = net.JoinHostPort(u.Hostname(), "4317")
			}
			return ProtocolGRPC, hp, u.Hostname(), nil
		}
		if tlsOn && u.Scheme == "http" {
			u.Scheme = "https"
		}
		return ProtocolHTTP, u.String(), u.Hostname(), nil
	}
	h, _, err := net.SplitHostPort(host)
	if err != nil {
		return "", "", "", err
	}
	if protocol == ProtocolHTTP {
		scheme := "http://"
		if tlsOn {
			scheme = "https://"
		}
		return ProtocolHTTP, scheme + host, h, nil
	}
	return ProtocolGRPC, host, h, nil
}
