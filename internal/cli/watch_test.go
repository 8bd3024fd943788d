package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/testlog"
	"github.com/edgeport/edgeport/internal/testwait"
)

func storeApply(t *testing.T, st *config.Store, doc string) {
	t.Helper()
	obj, err := config.Builtin().Decode([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Apply(obj, config.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
}

func listenerDoc(name, labels string) string {
	return "apiVersion: edgeport.io/v1\nkind: BrokerListener\nmetadata: {name: " + name + ", labels: {" + labels + "}}\nspec: {ports: [{port: 1883}]}\n"
}

// TestWatchStream: GET ?watch=true sends the existing resources as ADDED,
// a BOOKMARK, then ADDED, MODIFIED and DELETED as they happen, for the
// kind and selector asked only.
func TestWatchStream(t *testing.T) {
	url, st := apiServer(t)
	storeApply(t, st, listenerDoc("one", "env: prod"))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/api/v1/brokerlisteners?watch=true&labelSelector=env%3Dprod", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	next := func() string {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("stream ended: %v", lines.Err())
		}
		var ev struct {
			Type   string `json:"type"`
			Object *struct {
				Kind     string `json:"kind"`
				Metadata struct {
					Name string `json:"name"`
				} `json:"metadata"`
			} `json:"object"`
		}
		if err := json.Unmarshal(lines.Bytes(), &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Object == nil {
			return ev.Type
		}
		return ev.Type + " " + ev.Object.Kind + "/" + ev.Object.Metadata.Name
	}
	for _, want := range []string{"ADDED BrokerListener/one", "BOOKMARK"} {
		if got := next(); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	storeApply(t, st, listenerDoc("other", "env: dev"))                                                  // not selected
	storeApply(t, st, "apiVersion: edgeport.io/v1\nkind: Broker\nmetadata: {name: default}\nspec: {}\n") // another kind
	storeApply(t, st, listenerDoc("two", "env: prod"))
	storeApply(t, st, listenerDoc("two", "env: prod, tier: edge"))
	if _, err := st.Delete(config.Key{Kind: "BrokerListener", Name: "one"}, "test"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ADDED BrokerListener/two", "MODIFIED BrokerListener/two", "DELETED BrokerListener/one"} {
		if got := next(); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
}

// TestGetWatch: edgeport get KIND --watch prints the table, then a row per
// change, until interrupted.
func TestGetWatch(t *testing.T) {
	url, st := apiServer(t)
	storeApply(t, st, listenerDoc("one", ""))
	var out, errOut testlog.Buffer
	root := newRoot(&out, &errOut)
	root.SetArgs([]string{"get", "brokerlisteners", "--watch", "--server", url, "--data-dir", t.TempDir()})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	testwait.For(t, "the table", func() bool { return strings.Contains(out.String(), "NAME") && strings.Contains(out.String(), "one") })
	storeApply(t, st, listenerDoc("two", ""))
	testwait.For(t, "a row for the new listener", func() bool { return strings.Contains(out.String(), "\ntwo ") })
	if n := strings.Count(out.String(), "NAME"); n != 1 {
		t.Fatalf("%d headers, want 1:\n%s", n, out.String())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("interrupted watch: %v (stderr %s)", err, errOut.String())
	}
}

// TestCompletion: the shell's completion request (cobra's hidden
// __complete) offers kinds, then the names the API has for that kind.
func TestCompletion(t *testing.T) {
	url, st := apiServer(t)
	storeApply(t, st, listenerDoc("plant", ""))
	storeApply(t, st, listenerDoc("press", ""))
	dir := t.TempDir()
	out, _, code := runCLI(t, "__complete", "get", "broker")
	if code != 0 || !strings.Contains(out, "brokerlisteners\n") || !strings.Contains(out, "brokerlistener\n") || strings.Contains(out, "devices") {
		t.Fatalf("kinds: exit %d\n%s", code, out)
	}
	out, _, code = runCLI(t, "__complete", "describe", "brokerlisteners", "--server", url, "--data-dir", dir, "p")
	if code != 0 || !strings.HasPrefix(out, "plant\npress\n:4\n") {
		t.Fatalf("names: exit %d\n%s", code, out)
	}
	// A name already given is not offered again.
	out, _, _ = runCLI(t, "__complete", "delete", "bl", "plant", "--server", url, "--data-dir", dir, "")
	if !strings.HasPrefix(out, "press\n:4\n") {
		t.Fatalf("names after one: %s", out)
	}
	if out, _, code := runCLI(t, "completion", "bash"); code != 0 || !strings.Contains(out, "bash completion") {
		t.Fatalf("completion bash: exit %d", code)
	}
}
