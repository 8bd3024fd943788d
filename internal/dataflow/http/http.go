// Package http is the dataflow destination that POSTs messages to a URL:
// one message per request (the payload as the body), or a batch as a JSON
// array, with headers, authentication and TLS.
package http

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/dataflow/stage"
)

// Destination posts to one URL.
type Destination struct {
	url      string
	path     stage.Template // appended to the URL per message's topic
	headers  http.Header
	client   *http.Client
	batching stage.Batching
}

var _ stage.Destination = (*Destination)(nil)

// New builds a destination for the endpoint; a non-empty dataDestination
// is a path appended to the URL (${inputTopic} substitutions allowed).
func New(s *config.HttpEndpointSettings, d *config.DataflowDestination, env stage.Env) (*Destination, error) {
	u, err := url.Parse(s.URL)
	if err != nil {
		return nil, err
	}
	var cert *config.SecretRef
	a := s.Authentication
	if a.Method == config.AuthX509Certificate {
		cert = a.X509CertificateSettings
	}
	tlsConf, err := env.TLS(s.TLS, cert, u.Hostname())
	if err != nil {
		return nil, err
	}
	h := http.Header{}
	for k, v := range s.Headers {
		h.Set(k, v)
	}
	switch a.Method {
	case config.AuthUsernamePassword:
		user, err := env.Secret(a.UsernamePasswordSettings.SecretRef, "username")
		if err != nil {
			return nil, err
		}
		pass, err := env.Secret(a.UsernamePasswordSettings.SecretRef, "password")
		if err != nil {
			return nil, err
		}
		h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":"+pass)))
	case config.AuthAccessToken:
		tok, err := env.Secret(a.AccessTokenSettings.SecretRef, "token")
		if err != nil {
			return nil, err
		}
		h.Set("Authorization", "Bearer "+tok)
	}
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		TLSClientConfig:     tlsConf,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
	}
	dest := &Destination{
		url: strings.TrimRight(s.URL, "/"), headers: h,
		client: &http.Client{Transport: tr, Timeout: time.Duration(*s.TimeoutSeconds) * time.Second},
	}
	if d.DataDestination != "" && d.DataDestination != "/" {
		if dest.path, err = stage.ParseTemplate(d.DataDestination); err != nil {
			return nil, err
		}
	}
	dest.batching = stage.BatchingOf(s.Batching)
	return dest, nil
}

// Batching implements stage.Batcher.
func (d *Destination) Batching() stage.Batching { return d.batching }

// Send posts the batch: with batching, messages for the same URL go in one
// request as a JSON array of their payloads (a payload that is not JSON is
// a JSON string); otherwise one request per message with the payload as
// the body. 2xx is accepted; 408, 429 and 5xx are retried; other statuses
// reject the message permanently.
func (d *Destination) Send(ctx context.Context, batch []*stage.Message) error {
	if d.batching.MaxMessages <= 1 {
		for _, m := range batch {
			u, err := d.target(m)
			if err != nil {
				return err
			}
			ct := m.ContentType
			if ct == "" {
				ct = "application/json"
			}
			if err := d.post(ctx, u, ct, m.Payload, m); err != nil {
				return err
			}
		}
		return nil
	}
	// Group by URL, keeping order within each.
	var order []string
	groups := map[string][]json.RawMessage{}
	for _, m := range batch {
		u, err := d.target(m)
		if err != nil {
			return err
		}
		if _, ok := groups[u]; !ok {
			order = append(order, u)
		}
		p := json.RawMessage(m.Payload)
		if !json.Valid(p) {
			s, _ := json.Marshal(string(m.Payload))
			p = s
		}
		groups[u] = append(groups[u], p)
	}
	for _, u := range order {
		body, err := json.Marshal(groups[u])
		if err != nil {
			return stage.Permanent(err)
		}
		if err := d.post(ctx, u, "application/json", body, nil); err != nil {
			return err
		}
	}
	return nil
}

func (d *Destination) target(m *stage.Message) (string, error) {
	if d.path.Empty() {
		return d.url, nil
	}
	p, err := d.path.Expand(m.SourceTopic)
	if err != nil {
		return "", err
	}
	return d.url + "/" + strings.TrimLeft(p, "/"), nil
}

func (d *Destination) post(ctx context.Context, u, contentType string, body []byte, m *stage.Message) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return stage.Permanent(err)
	}
	req.Header = d.headers.Clone()
	req.Header.Set("Content-Type", contentType)
	if m != nil {
		for _, p := range m.UserProperties {
			if validHeaderName(p.Key) {
				req.Header.Add("X-Mqtt-User-"+p.Key, p.Value)
			}
		}
		if m.SourceTopic != "" {
			req.Header.Set("X-Mqtt-Topic", m.SourceTopic)
		}
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return fmt.Errorf("POST %s: %w", u, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode >= 500:
		return fmt.Errorf("POST %s: %s: %s", u, resp.Status, bytes.TrimSpace(msg))
	}
	return stage.Permanentf("POST %s: %s: %s", u, resp.Status, bytes.TrimSpace(msg))
}

func validHeaderName(k string) bool {
	if k == "" {
		return false
	}
	for _, r := range k {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune(`()<>@,;:\"/[]?={}`, r) {
			return false
		}
	}
	return true
}

// Close releases idle connections.
func (d *Destination) Close(context.Context) error {
	d.client.CloseIdleConnections()
	return nil
}
