package http

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/dataflow/stage"
)

type received struct {
	mu   sync.Mutex
	reqs []*http.Request
	body [][]byte
}

func server(t *testing.T, status func(n int) int) (*httptest.Server, *received) {
	t.Helper()
	rec := &received{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, r)
		rec.body = append(rec.body, b)
		n := len(rec.reqs)
		rec.mu.Unlock()
		w.WriteHeader(status(n))
	}))
	t.Cleanup(srv.Close)
	return srv, rec
}

func settings(t *testing.T, u string, mut func(*config.HttpEndpointSettings)) *config.HttpEndpointSettings {
	t.Helper()
	spec := &config.DataflowEndpointSpec{EndpointType: config.EndpointHttp, HttpSettings: &config.HttpEndpointSettings{URL: u}}
	if mut != nil {
		mut(spec.HttpSettings)
	}
	obj := &config.Object{APIVersion: config.APIVersion, Kind: "DataflowEndpoint", Metadata: config.Metadata{Name: "h"}, Spec: spec}
	if err := config.Builtin().Check(obj); err != nil {
		t.Fatal(err)
	}
	return spec.HttpSettings
}

func TestPostBatchesWithHeadersAndToken(t *testing.T) {
	srv, rec := server(t, func(int) int { return 204 })
	data := t.TempDir()
	if err := os.MkdirAll(filepath.Join(data, "secrets", "tok"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "secrets", "tok", "token"), []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := settings(t, srv.URL+"/ingest", func(s *config.HttpEndpointSettings) {
		s.Headers = map[string]string{"X-Site": "plant-1"}
		n := 10
		s.Batching.MaxMessages = &n
		s.Authentication = &config.DataflowAuthentication{Method: config.AuthAccessToken, AccessTokenSettings: &config.SecretRef{SecretRef: "tok"}}
	})
	d, err := New(s, &config.DataflowDestination{DataDestination: "${inputTopic.1}"}, stage.Env{DataDir: data})
	if err != nil {
		t.Fatal(err)
	}
	batch := []*stage.Message{
		{SourceTopic: "a/x", Payload: []byte(`{"v":1}`)},
		{SourceTopic: "b/x", Payload: []byte(`{"v":2}`)},
		{SourceTopic: "a/y", Payload: []byte(`text`)},
	}
	if err := d.Send(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.reqs) != 2 {
		t.Fatalf("%d requests, want one per URL", len(rec.reqs))
	}
	r := rec.reqs[0]
	if r.URL.Path != "/ingest/a" || r.Header.Get("Authorization") != "Bearer s3cret" || r.Header.Get("X-Site") != "plant-1" ||
		r.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("request %s %v", r.URL.Path, r.Header)
	}
	var arr []json.RawMessage
	if err := json.Unmarshal(rec.body[0], &arr); err != nil || len(arr) != 2 || string(arr[0]) != `{"v":1}` || string(arr[1]) != `"text"` {
		t.Fatalf("body %s", rec.body[0])
	}
	if rec.reqs[1].URL.Path != "/ingest/b" {
		t.Fatalf("second request to %s", rec.reqs[1].URL.Path)
	}
}

func TestStatusClassification(t *testing.T) {
	for _, c := range []struct {
		status    int
		permanent bool
	}{{503, false}, {429, false}, {408, false}, {400, true}, {404, true}} {
		srv, _ := server(t, func(int) int { return c.status })
		d, err := New(settings(t, srv.URL, nil), &config.DataflowDestination{}, stage.Env{})
		if err != nil {
			t.Fatal(err)
		}
		err = d.Send(context.Background(), []*stage.Message{{SourceTopic: "t", Payload: []byte("{}"), UserProperties: []stage.UserProperty{{Key: "k", Value: "v"}}}})
		if err == nil || errors.Is(err, stage.ErrPermanent) != c.permanent {
			t.Errorf("status %d: err %v, want permanent %v", c.status, err, c.permanent)
		}
	}
}
