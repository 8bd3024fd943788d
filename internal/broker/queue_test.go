package broker

import (
	"fmt"
	"testing"

	"github.com/eclipse/paho.golang/paho"
)

// TestQueueLimits checks both per-session queue bounds and both policies:
// an offline persistent session keeps what fits, and the drops are counted.
func TestQueueLimits(t *testing.T) {
	payload := make([]byte, 40)
	cases := []struct {
		name string
		opts Options
		want []int // indexes of the messages that must arrive, in order
	}{
		{"messages drop-new", Options{MaxQueuedMessages: 2}, []int{0, 1}},
		{"messages drop-oldest", Options{MaxQueuedMessages: 2, QueuePolicy: DropOldest}, []int{3, 4}},
		{"bytes drop-new", Options{MaxQueuedBytes: 100}, []int{0, 1}},
		{"bytes drop-oldest", Options{MaxQueuedBytes: 100, QueuePolicy: DropOldest}, []int{3, 4}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr, b := startBroker(t, tc.opts)
			sub := dialP5(t, addr, v5persistent("q-sub", true, 60))
			sub.sub(t, paho.SubscribeOptions{Topic: "q/t", QoS: 1})
			if err := sub.Disconnect(&paho.Disconnect{}); err != nil {
				t.Fatal(err)
			}
			waitConnected(t, b, 0)
			pub := dialP5(t, addr, v5conn("q-pub"))
			for i := 0; i < 5; i++ {
				copy(payload, fmt.Sprint(i))
				pub.pub(t, &paho.Publish{Topic: "q/t", QoS: 1, Payload: append([]byte(nil), payload...)})
			}
			if got := b.Counters().Dropped["queue_full"]; got != 3 {
				t.Fatalf("queue_full drops = %d, want 3", got)
			}
			back := dialP5(t, addr, v5persistent("q-sub", false, 60))
			msgs := back.waitTopic(t, "q/t", len(tc.want))
			for i, w := range tc.want {
				if got := string(msgs[i].Payload[:1]); got != fmt.Sprint(w) {
					t.Fatalf("message %d is %q, want %d", i, got, w)
				}
			}
		})
	}
}
