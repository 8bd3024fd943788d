package broker

import (
	"context"
	"log/slog"
	"testing"
	"time"
)

// TestPauseWatchCountsGaps: a look more than pauseAfter after the
// ticker's last tick counts a pause once, whoever looks first (the ticker
// or a connection); ticks and looks closer together count none.
func TestPauseWatchCountsGaps(t *testing.T) {
	var now time.Duration
	w := &pauseWatch{now: func() time.Duration { return now }}
	for _, step := range []struct {
		advance time.Duration
		tick    bool // the ticker's look, else a connection's
		want    uint64
	}{
		{0, false, 0},
		{pauseTick, true, 0},
		{pauseTick, false, 0},
		{pauseTick, true, 0},
		{pauseAfter, true, 0},                   // exactly pauseAfter: not a pause
		{pauseAfter / 2, false, 0},              // a connection between ticks
		{2 * pauseAfter, false, 1},              // the process did not run for 2.5 s: a connection sees it first
		{0, true, 1},                            // the ticker right after: the same pause
		{pauseTick, false, 1},                   // running again
		{pauseTick, true, 1},                    //
		{pauseAfter + time.Nanosecond, true, 2}, // another one, the ticker first
		{0, false, 2},                           // and the connection after it
	} {
		now += step.advance
		var got uint64
		if step.tick {
			w.tick()
			got = w.epoch.Load()
		} else {
			got = w.look()
		}
		if got != step.want {
			t.Fatalf("at %v (after %v, tick %v): %d pauses, want %d", now, step.advance, step.tick, got, step.want)
		}
	}
}

// BenchmarkCheckPaused is what a PUBLISH pays in cluster mode for the
// pause check when the node was not paused: a clock read and two atomic
// loads, from many connections at once.
func BenchmarkCheckPaused(b *testing.B) {
	br := &Broker{pauses: newPauseWatch(), log: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); br.pauses.run(ctx, br) }()
	defer func() { cancel(); <-done }()
	b.RunParallel(func(pb *testing.PB) {
		c := &client{b: br}
		for pb.Next() {
			if err := c.checkPaused(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
