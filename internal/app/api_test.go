package app

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/edgeport/edgeport/internal/api"
)

// GET /api/v1 answers with the discovery document itself: no redirect to
// /api/v1/ for clients that do not follow redirects.
func TestAPIRootWithoutRedirect(t *testing.T) {
	a := startApp(t, Config{HTTPAddr: "127.0.0.1:0"})
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, path := range []string{api.Prefix, api.Prefix + "/"} {
		resp, err := hc.Get("http://" + a.Addrs()["http"].String() + path)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil || len(body) == 0 {
			t.Fatalf("GET %s: %d %v %v", path, resp.StatusCode, err, body)
		}
	}
}
