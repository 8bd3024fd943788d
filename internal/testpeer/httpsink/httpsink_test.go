package httpsink

import (
	"net/http"
	"slices"
	"strings"
	"testing"
)

func post(t *testing.T, url, body string) int {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

func TestSink(t *testing.T) {
	s := Start(t)
	if code := post(t, s.URL, `[{"seq":0},{"seq":1}]`); code != http.StatusNoContent {
		t.Fatalf("batch: status %d", code)
	}
	s.SetDown(true)
	if code := post(t, s.URL, `{"seq":2}`); code != http.StatusServiceUnavailable || !s.Down() {
		t.Fatalf("while down: status %d", code)
	}
	s.SetDown(false)
	if code := post(t, s.URL, `{"seq":2}`); code != http.StatusNoContent {
		t.Fatalf("single: status %d", code)
	}
	if got := s.Payloads(); !slices.Equal(got, []string{`{"seq":0}`, `{"seq":1}`, `{"seq":2}`}) {
		t.Fatalf("payloads %q", got)
	}
	if got := s.Seqs(); !slices.Equal(got, []int{0, 1, 2}) {
		t.Fatalf("seqs %v", got)
	}
	if s.Hits() != 3 {
		t.Fatalf("hits %d, want 3 (the refused one counts)", s.Hits())
	}
}
