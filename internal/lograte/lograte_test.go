package lograte

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}})), time.Minute)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l.now = func() time.Time { return now }

	logged := 0
	for range 1000 {
		if l.Log(slog.LevelError, "disk", "no space left", "dir", "/d") {
			logged++
		}
		now = now.Add(time.Millisecond)
	}
	if logged != 1 {
		t.Fatalf("1000 errors within a second logged %d lines, want 1", logged)
	}
	l.Log(slog.LevelWarn, "port", "cannot bind") // another key is independent
	now = now.Add(time.Minute)
	l.Log(slog.LevelError, "disk", "no space left", "dir", "/d")
	l.Reset("disk")
	l.Log(slog.LevelInfo, "disk", "no space left", "dir", "/d")
	want := `level=ERROR msg="no space left" dir=/d
level=WARN msg="cannot bind"
level=ERROR msg="no space left" dir=/d suppressed=999
level=INFO msg="no space left" dir=/d
`
	if got := buf.String(); got != want {
		t.Fatalf("log:\n%s\nwant:\n%s", got, want)
	}
	if strings.Count(buf.String(), "\n") != 4 {
		t.Fatal("line count")
	}
}
