package e2e

import (
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/testwait"
)

// TestClusterFaultSharedKill (issue 18, items 2, 3 and 4): a shared
// subscription group of two persistent sessions, w1 on n2 and w2 on n3,
// gets QoS 1 and QoS 2 messages from publishers on n1 at full speed; n2 is
// killed with SIGKILL midway and w1 resumes its session on n3. Every
// acknowledged message reaches the group, and none reaches both members
// (the publishing node picks one member per message and stores the
// delivery in its session stream before the PUBACK; the live queue group
// drops its copy).
func TestClusterFaultSharedKill(t *testing.T) {
	c := newFaultCluster(t)
	members := []*crashSub{newCrashSub("shared-w1"), newCrashSub("shared-w2")}
	for i, m := range members {
		// A node refuses clients (0x88) until its cluster state is ready.
		var err error
		if !testwait.Within(60*time.Second, func() bool { _, err = m.connect(c.mqtt[i+1], true); return err == nil }) {
			t.Fatal(err)
		}
		if err := m.subscribe(packet.Subscription{Filter: "$share/workers/crash/q1", QoS: 1},
			packet.Subscription{Filter: "$share/workers/crash/q2", QoS: 2}); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, m := range members {
			m.disconnect(true)
		}
	})
	// Ready once n1 gives both members messages: its session index has
	// their subscriptions (earlier probes may take the queue group).
	probe := newCrashPub("probe", 1, false)
	if _, err := probe.connect(c.mqtt[0], true); err != nil {
		t.Fatal(err)
	}
	if !testwait.Within(60*time.Second, func() bool {
		probe.run(1)
		return sum(members[0].counts("probe")) > 0 && sum(members[1].counts("probe")) > 0
	}) {
		t.Fatal("probes published on n1 never reached both members")
	}
	probe.halt()

	pubs := []*crashPub{newCrashPub("shared-q1", 1, false), newCrashPub("shared-q2", 2, false)}
	const total = 3000
	done := make(chan int, len(pubs))
	for _, p := range pubs {
		p.roaming = true // a refusal (0x80) while JetStream elects new leaders is counted, not a violation
		if _, err := p.connect(c.mqtt[0], true); err != nil {
			t.Fatal(err)
		}
		go func() { done <- p.run(total) }()
	}
	t.Cleanup(func() {
		for _, p := range pubs {
			p.halt()
		}
	})
	if !testwait.Within(60*time.Second, func() bool { return acked(pubs[0]) >= total/4 }) {
		t.Fatalf("only %d QoS 1 messages acknowledged before the kill", acked(pubs[0]))
	}
	old := members[0].current()
	c.kill(1)
	killedAt := time.Now()
	<-old.done // the connection to n2 ended: w1 reads nothing more until it resumes
	members[0].mu.Lock()
	before := map[string]int{}
	for _, p := range pubs {
		before[p.name] = len(members[0].firsts[p.name])
	}
	members[0].mu.Unlock()
	var present bool
	if !testwait.Within(60*time.Second, func() bool {
		var err error
		present, err = members[0].connect(c.mqtt[2], false)
		return err == nil
	}) {
		t.Fatal("w1 could not resume on n3")
	}
	if !present {
		t.Fatal("w1 resumed on n3 without its session")
	}
	resumedAt := time.Now()
	for range pubs {
		select {
		case <-done:
		case <-time.After(2 * time.Minute):
			t.Fatal("the publishers did not finish")
		}
	}
	for _, p := range pubs {
		p.finish()
		if err := p.settled(time.Minute); err != nil {
			t.Fatal(err)
		}
	}

	for _, p := range pubs {
		acks := p.acks()
		var missing, both []int
		if !testwait.Within(time.Minute, func() bool {
			missing = missing[:0]
			w1, w2 := members[0].counts(p.name), members[1].counts(p.name)
			for seq, at := range acks {
				if !at.IsZero() && at1(w1, seq)+at1(w2, seq) == 0 {
					missing = append(missing, seq)
				}
			}
			return len(missing) == 0
		}) {
			t.Errorf("%s: %d acknowledged messages never reached the group, e.g. %v", p.name, len(missing), missing[:min(5, len(missing))])
		}
		w1, w2 := members[0].counts(p.name), members[1].counts(p.name)
		again := 0
		for seq := range max(len(w1), len(w2)) {
			if at1(w1, seq) > 0 && at1(w2, seq) > 0 {
				both = append(both, seq)
			}
			if at1(w1, seq) > 1 || at1(w2, seq) > 1 {
				again++
			}
		}
		if len(both) > 0 {
			t.Errorf("%s: %d messages reached both members, e.g. seq %v", p.name, len(both), both[:min(5, len(both))])
		}
		members[0].mu.Lock()
		after, away := 0, 0
		for _, seq := range members[0].firsts[p.name][before[p.name]:] {
			switch {
			case seq >= len(acks) || acks[seq].IsZero():
			case acks[seq].Before(killedAt):
				after++
			case acks[seq].Before(resumedAt):
				away++
			}
		}
		members[0].mu.Unlock()
		n, refused := 0, 0
		state, _, _, _ := p.snapshot()
		for seq, st := range state {
			if !acks[seq].IsZero() {
				n++
			} else if st == msgRefused {
				refused++
			}
		}
		t.Logf("%s: %d published, %d acknowledged, %d refused; w1 %d, w2 %d; first reached w1 after it resumed on n3: %d acknowledged before the kill, %d while it was away; %d redelivered to the same member; %d reached both",
			p.name, len(state), n, refused, sum(w1), sum(w2), after, away, again, len(both))
	}
	for _, m := range members {
		if v := m.violations(); len(v) > 0 {
			t.Errorf("%s: %v", m.name, v[:min(5, len(v))])
		}
	}
}

// at1 is counts[seq], 0 past its end.
func at1(counts []uint8, seq int) int {
	if seq < len(counts) {
		return int(counts[seq])
	}
	return 0
}

// sum adds up counts.
func sum(counts []uint8) int {
	n := 0
	for _, c := range counts {
		n += int(c)
	}
	return n
}
