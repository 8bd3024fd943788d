package cluster

import (
	"testing"
	"time"
)

// healthy reports whether m counts name healthy at now.
func healthy(m *members, name string, now time.Time) bool {
	for _, mb := range m.list(now) {
		if mb.Name == name {
			return mb.Healthy
		}
	}
	return false
}

// TestMembersSilenceCountsRunningTime: a node that did not run for a
// while (SIGSTOP) heard nothing meanwhile, so a member's silence counts
// from when it runs again: right after the thaw the others are still
// healthy, also before its heartbeat loop has run (another goroutine may
// look first), and a member still unheard three intervals of running
// later is not. Without it the thawed node counted every member unheard
// for the whole freeze and, its routes not made again yet, adopted the
// sessions of live nodes.
func TestMembersSilenceCountsRunningTime(t *testing.T) {
	const interval = time.Second
	m := newMembers("n3", interval)
	t0 := m.started
	m.seen(heartbeat{Name: "n2", Started: t0}, t0)
	m.tick(t0.Add(interval))
	if !healthy(m, "n2", t0.Add(interval)) {
		t.Fatal("n2 unhealthy one interval after its heartbeat")
	}
	// Running, n2 silent: unhealthy after three intervals.
	m.tick(t0.Add(2 * interval))
	m.tick(t0.Add(3 * interval))
	if healthy(m, "n2", t0.Add(3*interval+interval/2)) {
		t.Fatal("n2 healthy 3.5 intervals after its last heartbeat, this node running")
	}

	// Heard again, then this node is frozen for 40 s.
	m.seen(heartbeat{Name: "n2", Started: t0}, t0.Add(4*interval))
	m.tick(t0.Add(4 * interval))
	thaw := t0.Add(44 * interval)
	if !healthy(m, "n2", thaw) {
		t.Fatal("n2 unhealthy at the thaw, before this node's heartbeat loop ran: its silence counted the freeze")
	}
	if !m.tooSoon(thaw) {
		t.Fatal("a member never heard from is judged at the thaw")
	}
	if paused := m.tick(thaw); paused != 40*interval {
		t.Fatalf("tick at the thaw saw a pause of %v, want %v", paused, 40*interval)
	}
	for _, d := range []time.Duration{interval, 2 * interval, 3 * interval} {
		m.tick(thaw.Add(d))
		if !healthy(m, "n2", thaw.Add(d)) {
			t.Fatalf("n2 unhealthy %v after the thaw: its silence counted the freeze", d)
		}
	}
	m.tick(thaw.Add(4 * interval))
	if healthy(m, "n2", thaw.Add(4*interval)) {
		t.Fatal("n2 still healthy four intervals of running after the thaw, unheard")
	}
	if m.tooSoon(thaw.Add(4 * interval)) {
		t.Fatal("a member never heard from is still too soon to judge four intervals after the thaw")
	}

	// A late tick within pausedAfter is no pause.
	if paused := m.tick(thaw.Add(4*interval + m.pausedAfter())); paused != 0 {
		t.Fatalf("a tick %v late counted as a pause of %v", m.pausedAfter(), paused)
	}
}
