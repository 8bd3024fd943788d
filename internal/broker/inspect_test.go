package broker

import (
	"errors"
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeport/edgeport/internal/testwait"
)

// Sessions describes connected and offline sessions with their
// subscriptions and queue; DeleteSession ends an offline one (its queue
// dropped and counted, its will published) and refuses a connected one.
func TestSessionsAndDeleteSession(t *testing.T) {
	addr, b := startBroker(t, Options{})
	watcher := dialP5(t, addr, v5conn("watcher"))
	watcher.sub(t, paho.SubscribeOptions{Topic: "wills/#", QoS: 1})

	expiry := uint32(3600)
	cp := v5persistent("sleeper", true, expiry)
	delay := uint32(3600)
	cp.WillMessage = &paho.WillMessage{Topic: "wills/sleeper", Payload: []byte("gone"), QoS: 1}
	cp.WillProperties = &paho.WillProperties{WillDelayInterval: &delay}
	sleeper := dialP5(t, addr, cp)
	sleeper.sub(t, paho.SubscribeOptions{Topic: "jobs/+", QoS: 1})

	info, ok := b.Session("sleeper")
	if !ok || !info.Online || info.Protocol != 5 || info.ExpirySeconds != 3600 || !info.HasWill || info.RemoteAddr == "" ||
		len(info.Subscriptions) != 1 || info.Subscriptions[0] != (SubscriptionInfo{Filter: "jobs/+", QoS: 1}) {
		t.Fatalf("online session: %+v", info)
	}
	if err := b.DeleteSession("sleeper"); !errors.Is(err, ErrSessionOnline) {
		t.Fatalf("deleting a connected session: %v", err)
	}

	// Offline, with two messages queued.
	sleeper.Conn.Close()
	testwait.For(t, "the session offline", func() bool { s, _ := b.Session("sleeper"); return !s.Online })
	for range 2 {
		watcher.pub(t, &paho.Publish{Topic: "jobs/1", QoS: 1, Payload: []byte("job")})
	}
	info, _ = b.Session("sleeper")
	if info.Queued != 2 || info.QueuedBytes != 6 || info.OfflineSince.IsZero() || info.RemoteAddr != "" {
		t.Fatalf("offline session: %+v", info)
	}
	all := b.Sessions()
	if len(all) != 2 || all[0].ClientID != "sleeper" || all[1].ClientID != "watcher" {
		t.Fatalf("sessions: %+v", all)
	}

	before := b.Counters().Dropped["session_ended"]
	if err := b.DeleteSession("sleeper"); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.Session("sleeper"); ok {
		t.Fatal("the session is still there")
	}
	if got := b.Counters().Dropped["session_ended"] - before; got != 2 {
		t.Fatalf("dropped with the session: %d, want 2", got)
	}
	// The will's delay ends with the session.
	watcher.waitTopic(t, "wills/sleeper", 1)
	if err := b.DeleteSession("sleeper"); !errors.Is(err, ErrNoSession) {
		t.Fatalf("deleting it again: %v", err)
	}
	// A new connection with the ID starts afresh.
	again := dialP5(t, addr, v5persistent("sleeper", false, expiry))
	if again.Connack.SessionPresent {
		t.Fatal("the deleted session was resumed")
	}
}
