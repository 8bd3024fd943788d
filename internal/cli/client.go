package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgeport/edgeport/internal/api"
	"github.com/edgeport/edgeport/internal/config"
)

// Environment variables the management commands read.
const (
	envServer = "EDGEPORT_SERVER"
	envToken  = "EDGEPORT_TOKEN"
)

const requestTimeout = 30 * time.Second

// clientFlags are the flags of every command that talks to the API.
type clientFlags struct {
	server, token, dataDir string
}

func (f *clientFlags) add(cmd *cobra.Command) {
	server := os.Getenv(envServer)
	if server == "" {
		server = "http://127.0.0.1:8080"
	}
	fl := cmd.Flags()
	fl.StringVar(&f.server, "server", server, "Edgeport HTTP address (env "+envServer+")")
	fl.StringVar(&f.token, "token", "", "API bearer token (default: env "+envToken+", else the token file in --data-dir)")
	fl.StringVar(&f.dataDir, "data-dir", "edgeport-data", "data directory whose api-token file to use when no token is given")
}

// client resolves the server and token into an API client.
func (f *clientFlags) client() (*apiClient, error) {
	base, tok, err := f.resolve()
	if err != nil {
		return nil, err
	}
	return &apiClient{base: base + api.Prefix, token: tok, hc: &http.Client{Timeout: requestTimeout}, kinds: config.Builtin()}, nil
}

// resolve returns the server's base URL and the token: --token, else
// $EDGEPORT_TOKEN, else the api-token file in --data-dir (none is fine:
// the API needs none on loopback).
func (f *clientFlags) resolve() (base, token string, err error) {
	base = strings.TrimRight(f.server, "/")
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	if !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
		return "", "", fmt.Errorf("--server: %q must be an http:// or https:// URL", f.server)
	}
	tok := f.token
	if tok == "" {
		tok = os.Getenv(envToken)
	}
	if tok == "" && f.dataDir != "" {
		t, err := api.ReadToken(f.dataDir)
		switch {
		case err == nil:
			tok = t
		case !errors.Is(err, os.ErrNotExist):
			return "", "", err
		}
	}
	return base, tok, nil
}

// apiClient calls the REST API.
type apiClient struct {
	base  string
	token string
	hc    *http.Client
	kinds *config.Kinds
}

// apiError is an error response of the API.
type apiError struct {
	status  int
	msg     string
	details []string
}

func (e *apiError) Error() string {
	if len(e.details) == 0 {
		return e.msg
	}
	return e.msg + "\n  - " + strings.Join(e.details, "\n  - ")
}

func isNotFound(err error) bool {
	var ae *apiError
	return errors.As(err, &ae) && ae.status == http.StatusNotFound
}

// do sends a request and returns the body of a 2xx response, or an
// *apiError built from the API's JSON error.
func (c *apiClient) do(ctx context.Context, method, path string, body []byte, ct string) ([]byte, http.Header, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, nil, err
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot reach the Edgeport API (is `edgeport serve` running? --server %s): %w",
			strings.TrimSuffix(c.base, api.Prefix), err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("reading the API's answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var eb api.ErrorBody
		if json.Unmarshal(data, &eb) != nil || eb.Error == "" {
			eb.Error = fmt.Sprintf("%s %s: %s", method, path, resp.Status)
		}
		return nil, resp.Header, &apiError{status: resp.StatusCode, msg: eb.Error, details: eb.Details}
	}
	return data, resp.Header, nil
}

// watch follows GET <plural>?watch=true, calling fn with each event (and
// its line) until ctx ends (nil), the stream ends (an error: the server
// went away or dropped a watcher that fell behind) or fn fails.
func (c *apiClient) watch(ctx context.Context, def *config.KindDef, selector string, fn func(api.WatchEvent, json.RawMessage) error) error {
	path := "/" + def.Plural + "?watch=true"
	if selector != "" {
		path += "&labelSelector=" + urlQueryEscape(selector)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	// No client timeout: the stream lasts until interrupted.
	resp, err := (&http.Client{Transport: c.hc.Transport}).Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("cannot reach the Edgeport API (is `edgeport serve` running? --server %s): %w",
			strings.TrimSuffix(c.base, api.Prefix), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var eb api.ErrorBody
		if json.Unmarshal(data, &eb) != nil || eb.Error == "" {
			eb.Error = fmt.Sprintf("GET %s: %s", path, resp.Status)
		}
		return &apiError{status: resp.StatusCode, msg: eb.Error, details: eb.Details}
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var line json.RawMessage
		if err := dec.Decode(&line); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("the watch ended: %w", err)
		}
		var ev struct {
			Type   string          `json:"type"`
			Object json.RawMessage `json:"object"`
		}
		if err := json.Unmarshal(line, &ev); err != nil {
			return fmt.Errorf("decoding a watch event: %w", err)
		}
		out := api.WatchEvent{Type: ev.Type}
		if len(ev.Object) > 0 && string(ev.Object) != "null" {
			if out.Object, err = c.kinds.DecodeJSON(ev.Object); err != nil {
				return err
			}
		}
		if err := fn(out, line); err != nil {
			return err
		}
	}
}

// list fetches a kind's resources.
func (c *apiClient) list(ctx context.Context, def *config.KindDef, selector string) ([]*config.Object, error) {
	path := "/" + def.Plural
	if selector != "" {
		path += "?labelSelector=" + urlQueryEscape(selector)
	}
	data, _, err := c.do(ctx, http.MethodGet, path, nil, "")
	if err != nil {
		return nil, err
	}
	var l struct {
		Items []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(data, &l); err != nil {
		return nil, fmt.Errorf("decoding the list: %w", err)
	}
	out := make([]*config.Object, 0, len(l.Items))
	for _, it := range l.Items {
		o, err := c.kinds.DecodeJSON(it)
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, nil
}

// get fetches one resource and its raw JSON.
func (c *apiClient) get(ctx context.Context, def *config.KindDef, name string) (*config.Object, []byte, error) {
	data, _, err := c.do(ctx, http.MethodGet, "/"+def.Plural+"/"+name, nil, "")
	if err != nil {
		return nil, nil, err
	}
	o, err := c.kinds.DecodeJSON(data)
	return o, data, err
}

func urlQueryEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-_.~", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// lookupKind resolves the KIND argument: a kind, plural or short name, in
// any case.
func lookupKind(kinds *config.Kinds, name string) (*config.KindDef, error) {
	if d := kinds.Lookup(name); d != nil {
		return d, nil
	}
	var names []string
	for _, d := range kinds.All() {
		names = append(names, d.Singular())
	}
	return nil, fmt.Errorf("unknown resource type %q (one of %s)", name, strings.Join(names, ", "))
}

// ref names a resource as the commands print it: brokerlistener/plant.
func ref(def *config.KindDef, name string) string { return def.Singular() + "/" + name }

func addResourceCommands(root *cobra.Command, stdout, stderr io.Writer) {
	get, describe, del := newGet(stdout, stderr), newDescribe(stdout), newDelete(stdout, stderr)
	get.ValidArgsFunction = completeResources(true)
	describe.ValidArgsFunction = completeResources(false)
	del.ValidArgsFunction = completeResources(false)
	root.AddCommand(newApply(stdout, stderr), get, describe, del, newToken(stdout))
}
