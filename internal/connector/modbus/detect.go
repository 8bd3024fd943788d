package modbus

import (
	"math"
	"time"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/connector"
)

// changes decides what a dataset publishes after each poll: the points
// that changed (beyond their deadband) since they were last published,
// every point on the first poll and every keyFrameCount-th poll after it
// (the heartbeat), and at most one message per throttle interval (changes
// seen meanwhile wait, the latest value of each point winning). It is
// plain logic driven by the poll's time, so tests drive it with any clock.
type changes struct {
	keyFrameCount int
	throttle      time.Duration
	deadband      []*config.Deadband // per point

	polls       int
	lastPublish time.Time
	last        []any    // last published value per point; nil: never
	lastBad     []string // last published status symbol per point
	published   []bool
	pending     []*connector.Sample // per point; nil: nothing waiting
	pendingKey  bool
}

func newChanges(points []config.ModbusPoint, keyFrameCount int, throttle time.Duration) *changes {
	c := &changes{keyFrameCount: keyFrameCount, throttle: throttle,
		last: make([]any, len(points)), lastBad: make([]string, len(points)),
		published: make([]bool, len(points)), pending: make([]*connector.Sample, len(points))}
	for _, p := range points {
		c.deadband = append(c.deadband, p.Deadband)
	}
	return c
}

// observe takes one poll's samples (nil where a point was not read) and
// returns the frame to publish now, or nil.
func (c *changes) observe(now time.Time, samples []*connector.Sample) *connector.Frame {
	c.polls++
	key := c.polls == 1 || (c.keyFrameCount > 0 && (c.polls-1)%c.keyFrameCount == 0)
	for i, s := range samples {
		if s == nil {
			continue
		}
		if key || c.changed(i, s) {
			c.pending[i] = s
		}
	}
	if key {
		c.pendingKey = true
	}
	if c.throttle > 0 && !c.lastPublish.IsZero() && now.Sub(c.lastPublish) < c.throttle {
		return nil
	}
	f := &connector.Frame{Keyframe: c.pendingKey}
	for i, s := range c.pending {
		if s == nil {
			continue
		}
		f.Samples = append(f.Samples, *s)
		c.published[i] = true
		c.last[i] = s.Value
		c.lastBad[i] = ""
		if s.Status != nil {
			c.lastBad[i] = s.Status.Symbol
		}
		c.pending[i] = nil
	}
	c.pendingKey = false
	if len(f.Samples) == 0 {
		return nil
	}
	c.lastPublish = now
	return f
}

func (c *changes) changed(i int, s *connector.Sample) bool {
	if !c.published[i] {
		return true
	}
	bad := ""
	if s.Status != nil {
		bad = s.Status.Symbol
	}
	if bad != c.lastBad[i] {
		return true
	}
	if bad != "" {
		return false // still failing the same way
	}
	return differs(c.last[i], s.Value, c.deadband[i])
}

// differs compares a new value with the one last published, through the
// deadband for numbers.
func differs(old, v any, db *config.Deadband) bool {
	a, aok := toFloat(old)
	b, bok := toFloat(v)
	if !aok || !bok {
		return old != v
	}
	if math.IsNaN(a) || math.IsNaN(b) {
		return math.IsNaN(a) != math.IsNaN(b)
	}
	if db == nil || db.Value == 0 {
		return a != b
	}
	limit := db.Value
	if db.Type == config.DeadbandPercent {
		limit = math.Abs(a) * db.Value / 100
	}
	return math.Abs(b-a) > limit
}
