package statestore

import (
	"context"
	"testing"

	"github.com/eclipse/paho.golang/paho"
)

// Azure IoT Operations' Go SDK (services/statestore, services/leasedlock)
// registers a handler for notifications and never subscribes to its
// notification topic: notifications reach the registering client's session
// without a subscription, exactly once when it subscribed too, and a
// persistent session keeps its registrations across reconnects.
func TestKeyNotifyWithoutSubscription(t *testing.T) {
	e := startEnv(t, Options{})
	sdk := e.dialWith("sdk-like", dialOpts{cleanStart: true, expiry: 600})
	both := e.dial("subscribed")
	w := e.dial("writer")

	expect(t, sdk.do(nil, "KEYNOTIFY", "lock"), "+OK\r\n")
	expect(t, both.do(nil, "KEYNOTIFY", "lock"), "+OK\r\n")
	expect(t, w.do(nil, "SET", "lock", "holder-1"), "+OK\r\n")
	expect(t, w.do(nil, "DEL", "lock"), ":1\r\n")

	notes := sdk.notifications(2)
	if notes[1].Topic != notifyTopicPrefix+hexUpper("sdk-like")+"/command/notify/"+hexUpper("lock") ||
		string(notes[1].Payload) != "*2\r\n$6\r\nNOTIFY\r\n$6\r\nDELETE\r\n" {
		t.Fatalf("notification: %s %q", notes[1].Topic, notes[1].Payload)
	}
	if _, ok := prop(notes[0], "$edgeport.deliver-to"); ok {
		t.Fatal("the broker's routing property reached the client")
	}
	both.notifications(2)
	// A request answered after the notifications were sent flushes them:
	// the subscribed client got each one once, not once per route.
	expect(t, both.do(nil, "GET", "lock"), "$-1\r\n")
	expect(t, sdk.do(nil, "GET", "lock"), "$-1\r\n")
	if n := both.noteCount(); n != 2 {
		t.Fatalf("subscribed client got %d notifications, want 2", n)
	}
	if n := sdk.noteCount(); n != 2 {
		t.Fatalf("SDK-like client got %d notifications, want 2", n)
	}

	// The persistent session reconnects: its registration is still there.
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := sdk.pc.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sdk.pc.Done():
	case <-ctx.Done():
		t.Fatal("disconnect did not finish")
	}
	again := e.dialWith("sdk-like", dialOpts{cleanStart: false, expiry: 600})
	expect(t, w.do(nil, "SET", "lock", "holder-2"), "+OK\r\n")
	n := again.notifications(1)
	if string(n[0].Payload) != "*4\r\n$6\r\nNOTIFY\r\n$3\r\nSET\r\n$5\r\nVALUE\r\n$8\r\nholder-2\r\n" {
		t.Fatalf("after reconnect: %q", n[0].Payload)
	}
}
