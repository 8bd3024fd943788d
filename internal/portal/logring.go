package portal

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
)

// LogLine is one log record as the diagnostics page and the support
// bundle show it.
type LogLine struct {
	Seq     uint64            `json:"seq"`
	Time    time.Time         `json:"time"`
	Level   string            `json:"level"`
	Message string            `json:"msg"`
	Attrs   map[string]string `json:"attrs,omitempty"`
}

// LogRing keeps the most recent log records in memory, bounded in lines
// and in bytes per line, for the portal. It is safe for concurrent use.
type LogRing struct {
	level slog.Leveler
	mu    sync.Mutex // guards lines, next, seq
	lines []LogLine  // ring buffer of cap size
	next  int        // where the next line goes once the ring is full
	seq   uint64     // sequence number of the last line
	size  int
}

// maxAttrLen bounds each attribute value kept: a record with a large
// payload in an attribute must not make the ring large.
const maxAttrLen = 512

// NewLogRing keeps the last size records at level or above.
func NewLogRing(size int, level slog.Leveler) *LogRing {
	if size <= 0 {
		size = 1000
	}
	if level == nil {
		level = slog.LevelInfo
	}
	return &LogRing{level: level, size: size, lines: make([]LogLine, 0, size)}
}

func (r *LogRing) add(l LogLine) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	l.Seq = r.seq
	if len(r.lines) < r.size {
		r.lines = append(r.lines, l)
		return
	}
	r.lines[r.next] = l
	r.next = (r.next + 1) % r.size
}

// Lines returns the kept lines at minLevel or above, oldest first, after
// sequence number after (0 for all).
func (r *LogRing) Lines(minLevel slog.Level, after uint64) []LogLine {
	r.mu.Lock()
	all := make([]LogLine, 0, len(r.lines))
	all = append(all, r.lines[r.next:]...)
	all = append(all, r.lines[:r.next]...)
	r.mu.Unlock()
	return slices.DeleteFunc(all, func(l LogLine) bool {
		var lv slog.Level
		_ = lv.UnmarshalText([]byte(l.Level))
		return l.Seq <= after || lv < minLevel
	})
}

// Tee returns a handler that passes every record to h and keeps those at
// the ring's level in the ring too.
func (r *LogRing) Tee(h slog.Handler) slog.Handler {
	return &teeHandler{next: h, ring: r}
}

// teeHandler sends records to the next handler and to the ring. Attributes
// and groups added with WithAttrs/WithGroup are kept for the ring as
// flattened key=value strings.
type teeHandler struct {
	next   slog.Handler
	ring   *LogRing
	attrs  []slog.Attr // from WithAttrs, already prefixed by the groups
	prefix string      // group names joined with dots, each followed by a dot
}

func (t *teeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= t.ring.level.Level() || t.next.Enabled(ctx, l)
}

func (t *teeHandler) Handle(ctx context.Context, rec slog.Record) error {
	if rec.Level >= t.ring.level.Level() {
		line := LogLine{Time: rec.Time, Level: rec.Level.String(), Message: truncate(rec.Message, 4*maxAttrLen)}
		if line.Time.IsZero() {
			line.Time = time.Now()
		}
		if len(t.attrs) > 0 || rec.NumAttrs() > 0 {
			line.Attrs = make(map[string]string, len(t.attrs)+rec.NumAttrs())
			for _, a := range t.attrs {
				flatten(line.Attrs, "", a)
			}
			rec.Attrs(func(a slog.Attr) bool {
				flatten(line.Attrs, t.prefix, a)
				return true
			})
		}
		t.ring.add(line)
	}
	if t.next.Enabled(ctx, rec.Level) {
		return t.next.Handle(ctx, rec)
	}
	return nil
}

func (t *teeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *t
	c.next = t.next.WithAttrs(as)
	c.attrs = slices.Clone(t.attrs)
	for _, a := range as {
		a.Key = t.prefix + a.Key
		c.attrs = append(c.attrs, a)
	}
	return &c
}

func (t *teeHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return t
	}
	c := *t
	c.next = t.next.WithGroup(name)
	c.prefix = t.prefix + name + "."
	return &c
}

func flatten(m map[string]string, prefix string, a slog.Attr) {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, g := range v.Group() {
			flatten(m, p, g)
		}
		return
	}
	if a.Key == "" {
		return
	}
	m[prefix+a.Key] = truncate(v.String(), maxAttrLen)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}
