package portal

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/client"
)

func TestLogRingKeepsTheLastLines(t *testing.T) {
	ring := NewLogRing(3, slog.LevelInfo)
	var out strings.Builder
	log := slog.New(ring.Tee(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelWarn})))
	log = log.With("component", "broker").WithGroup("req")
	log.Debug("not kept")
	for i := range 5 {
		log.Info("line", "n", i, "big", strings.Repeat("x", 2*maxAttrLen))
	}
	log.Error("failed", "err", "disk full")
	lines := ring.Lines(slog.LevelDebug, 0)
	if len(lines) != 3 || lines[0].Attrs["req.n"] != "3" || lines[2].Message != "failed" || lines[2].Attrs["component"] != "broker" {
		t.Fatalf("ring: %+v", lines)
	}
	if len(lines[0].Attrs["req.big"]) > maxAttrLen+len("…") {
		t.Fatalf("an attribute of %d bytes was kept whole", len(lines[0].Attrs["req.big"]))
	}
	if got := ring.Lines(slog.LevelWarn, 0); len(got) != 1 || got[0].Level != "ERROR" {
		t.Fatalf("level filter: %+v", got)
	}
	if got := ring.Lines(slog.LevelDebug, lines[1].Seq); len(got) != 1 || got[0].Seq != lines[2].Seq {
		t.Fatalf("after: %+v", got)
	}
	// The next handler still gets what its own level admits, and only that.
	if strings.Contains(out.String(), "msg=line") || !strings.Contains(out.String(), "disk full") {
		t.Fatalf("next handler got:\n%s", out.String())
	}
}

// The topic browser holds at most max topics and counts the messages on
// the others; updates carry what changed since the page's version.
func TestTopicWatcherBounds(t *testing.T) {
	w := newTopicWatcher(nil, 3)
	for i := range 5 {
		w.onMessage(context.Background(), &client.Message{Topic: fmt.Sprintf("t/%d", i), Payload: make([]byte, maxPayload+10)})
	}
	d, _ := w.since(0)
	if !d.Full || d.Total != 3 || d.Untracked != 2 || len(d.Topics) != 3 {
		t.Fatalf("snapshot: %+v", d)
	}
	m, ok := w.message("t/0")
	if !ok || len(m.Payload) != maxPayload || !m.Truncated || m.Size != maxPayload+10 {
		t.Fatalf("payload kept: %d of %d, truncated %v", len(m.Payload), m.Size, m.Truncated)
	}
	w.onMessage(context.Background(), &client.Message{Topic: "t/1", Payload: []byte(`{"a":1}`), Retain: true})
	d2, _ := w.since(d.Version)
	if d2.Full || len(d2.Topics) != 1 || d2.Topics[0].Topic != "t/1" || !d2.Topics[0].Retained || d2.Topics[0].Preview != `{"a":1}` {
		t.Fatalf("delta: %+v", d2)
	}
	// Rates: 2 messages in a second, smoothed.
	now := time.Now()
	w.tick(now)
	w.onMessage(context.Background(), &client.Message{Topic: "t/2"})
	w.onMessage(context.Background(), &client.Message{Topic: "t/2"})
	w.tick(now.Add(time.Second))
	d3, _ := w.since(d2.Version)
	if len(d3.Topics) != 1 || d3.Topics[0].Rate != 1 {
		t.Fatalf("rate: %+v", d3.Topics)
	}
}

func TestPreview(t *testing.T) {
	if p := preview([]byte{0xff, 0x00, 0x01}); p != "0xff 00 01" {
		t.Fatalf("binary preview %q", p)
	}
	if p := preview([]byte(strings.Repeat("é", 100))); !strings.HasSuffix(p, "…") || len([]rune(p)) != previewLen+1 {
		t.Fatalf("long preview %q", p)
	}
}
