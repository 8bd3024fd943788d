// Package lifecycle is the one shape of Edgeport's long-running parts
// (Component) and the Group that starts them in order and stops them in reverse.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Component is a long-running part of Edgeport: the store, the broker, a
// listener, the state store, a connector, a dataflow. Its dependencies are
// passed when it is constructed; nothing runs until Start.
//
// Start makes the component ready for use and returns; it never blocks for
// the component's lifetime. ctx bounds only the start: background work the
// component runs afterwards is owned by the component and ends in Stop (use
// context.WithoutCancel(ctx) to keep the context's values). A Start that
// fails returns an error and leaves nothing behind (no goroutine, no open
// file, no bound port); Stop is not called after a failed Start.
//
// Stop ends the component after a successful Start, gracefully within ctx:
// work in flight that was acknowledged is finished or made durable. When ctx
// ends first, Stop cuts the rest short and returns an error wrapping
// ctx.Err(), but it still releases everything and waits for every goroutine
// it started before it returns. Stop is called at most once.
type Component interface {
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
}

// Hook adapts a pair of functions to a Component, for steps of a start that
// are not components of their own (mounting a handler, applying settings
// read from a started store). A nil function does nothing.
type Hook struct {
	OnStart func(ctx context.Context) error
	OnStop  func(ctx context.Context) error
}

var _ Component = Hook{}

// Start calls OnStart.
func (h Hook) Start(ctx context.Context) error {
	if h.OnStart == nil {
		return nil
	}
	return h.OnStart(ctx)
}

// Stop calls OnStop.
func (h Hook) Stop(ctx context.Context) error {
	if h.OnStop == nil {
		return nil
	}
	return h.OnStop(ctx)
}

// DefaultUnwindTimeout bounds stopping what had started when a Group's
// Start fails.
const DefaultUnwindTimeout = 10 * time.Second

// Group runs components as one: Start starts them in the order they were
// added (add a component after everything it depends on), and Stop stops
// them in reverse order. When one fails to start, the ones already started
// are stopped in reverse order and Start returns the failure. A Group is
// itself a Component, so groups nest.
type Group struct {
	// Log receives one line per component started and stopped; nil discards.
	Log *slog.Logger
	// UnwindTimeout bounds stopping the started components after a failed
	// Start (the Start context may be what failed); 0 means
	// DefaultUnwindTimeout.
	UnwindTimeout time.Duration

	// mu guards members and running; Start and Stop hold it throughout, so
	// they never interleave.
	mu      sync.Mutex
	members []member
	running []member // started and not yet stopped, in start order
}

type member struct {
	name string
	c    Component
}

var _ Component = (*Group)(nil)

// Add appends a component under a name used in logs and errors. Add
// components before Start.
func (g *Group) Add(name string, c Component) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.members = append(g.members, member{name, c})
}

// Names returns the components' names in start order.
func (g *Group) Names() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	names := make([]string, len(g.members))
	for i, m := range g.members {
		names[i] = m.name
	}
	return names
}

// Replace swaps the component registered under name, before Start. It
// reports whether name was found. Tests use it to put a failing component
// in the group; wiring code has no need for it.
func (g *Group) Replace(name string, wrap func(Component) Component) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for i, m := range g.members {
		if m.name == name {
			g.members[i].c = wrap(m.c)
			return true
		}
	}
	return false
}

func (g *Group) log() *slog.Logger {
	if g.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return g.Log
}

// Start starts every component in order. If one fails, those already
// started are stopped in reverse order, and the error names the component
// that failed (and any that then failed to stop).
func (g *Group) Start(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.running) > 0 {
		return errors.New("lifecycle: group already started")
	}
	for _, m := range g.members {
		if err := ctx.Err(); err != nil {
			return g.unwind(ctx, fmt.Errorf("starting %s: %w", m.name, err))
		}
		if err := m.c.Start(ctx); err != nil {
			return g.unwind(ctx, fmt.Errorf("starting %s: %w", m.name, err))
		}
		g.log().Debug("component started", "component", m.name)
		g.running = append(g.running, m)
	}
	return nil
}

// unwind stops what started, under its own deadline: ctx may be the reason
// the start failed.
func (g *Group) unwind(ctx context.Context, cause error) error {
	timeout := g.UnwindTimeout
	if timeout <= 0 {
		timeout = DefaultUnwindTimeout
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	if err := g.stopRunning(sctx); err != nil {
		return errors.Join(cause, fmt.Errorf("while unwinding: %w", err))
	}
	return cause
}

// Stop stops every started component in reverse order. Each gets the same
// ctx; a component that fails to stop does not keep the others running.
// Stopping a group that is not running does nothing.
func (g *Group) Stop(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.stopRunning(ctx)
}

func (g *Group) stopRunning(ctx context.Context) error {
	var errs []error
	for i := len(g.running) - 1; i >= 0; i-- {
		m := g.running[i]
		began := time.Now()
		err := m.c.Stop(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("stopping %s: %w", m.name, err))
		} else {
			// How long each stop took: a slow shutdown names its component.
			g.log().Debug("component stopped", "component", m.name, "took", time.Since(began))
		}
	}
	g.running = nil
	return errors.Join(errs...)
}
