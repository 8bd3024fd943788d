package broker

import (
	"encoding/binary"
	"testing"

	"github.com/edgeport/edgeport/internal/mqtt/topic"
)

// The member a group's message goes to in cluster mode: online members
// first, spread evenly over messages with consecutive identifiers, and the
// same for the same message and members whichever node asks.
func TestSharedPickSpreadsOnlineFirst(t *testing.T) {
	local := &session{id: "w-local"}
	local.online.Store(true)
	h := sharedHit{
		local:  []topic.Member[*session, *subscription]{{Key: local, Value: &subscription{qos: 1}}},
		remote: []SharedMember{{ClientID: "w-1", QoS: 1, Online: true}, {ClientID: "w-2", QoS: 1, Online: true}, {ClientID: "w-3", QoS: 1}},
	}
	const n = 3000
	// tally picks a member for each of n message ids, twice each: the
	// same member both times, counted once.
	tally := func() map[string]int {
		counts := map[string]int{}
		var id MessageID
		for i := range n {
			binary.BigEndian.PutUint64(id[8:], uint64(i))
			li, rm := h.pick(id)
			if li >= 0 {
				counts[local.id]++
			} else {
				counts[rm.ClientID]++
			}
			if li2, rm2 := h.pick(id); li2 != li || rm2 != rm {
				t.Fatalf("message %d: picked differently the second time", i)
			}
		}
		return counts
	}
	counts := tally()
	if counts["w-3"] != 0 {
		t.Fatalf("the offline member got %d while three were online", counts["w-3"])
	}
	for _, who := range []string{"w-local", "w-1", "w-2"} {
		if c := counts[who]; c < n/3-n/10 || c > n/3+n/10 {
			t.Errorf("%s got %d of %d (want about a third): %v", who, c, n, counts)
		}
	}

	local.online.Store(false)
	h.remote[0].Online, h.remote[1].Online, h.remote[2].Online = false, false, true
	counts = tally()
	if counts["w-3"] != n {
		t.Fatalf("with one member online it got %d of %d: %v", counts["w-3"], n, counts)
	}
	h.remote[2].Online = false
	counts = tally()
	if len(counts) != 4 {
		t.Fatalf("with every member offline the messages went to %v, want all four", counts)
	}
}
