package app

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeport/edgeport/internal/testwait"
)

// pahoClient connects a paho.golang (MQTT 5) client; received messages go
// to onMsg.
func pahoClient(t *testing.T, addr string, cp *paho.Connect, onMsg func(*paho.Publish)) *paho.Client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cc := paho.ClientConfig{Conn: conn, PacketTimeout: wait}
	if onMsg != nil {
		cc.OnPublishReceived = []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { onMsg(pr.Packet); return true, nil },
		}
	}
	c := paho.NewClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := c.Connect(ctx, cp); err != nil {
		conn.Close()
		t.Fatalf("connect %s: %v", cp.ClientID, err)
	}
	t.Cleanup(func() { conn.Close() })
	return c
}

// TestStopWithWorkInFlight stops the app while QoS 1 publishers are busy
// and a client with a will is connected, then starts it again on the same
// data directory: every message the broker acknowledged, and the will its
// shutdown published, reach the persistent subscriber.
func TestStopWithWorkInFlight(t *testing.T) {
	data := t.TempDir()
	a := startApp(t, Config{DataDir: data})
	addr := a.Addrs()["mqtt"].String()
	expiry := uint32(3600)
	persistent := &paho.Connect{ClientID: "sub", CleanStart: false, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}
	sub := pahoClient(t, addr, persistent, nil)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "inflight/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	if err := sub.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	// Its will goes out when the broker's shutdown ends the connection.
	pahoClient(t, addr, &paho.Connect{ClientID: "dying", CleanStart: true, KeepAlive: 30, WillMessage: &paho.WillMessage{Topic: "inflight/will", QoS: 1, Payload: []byte("gone")}}, nil)

	var (
		mu    sync.Mutex
		acked = map[string]bool{}
		wg    sync.WaitGroup
	)
	for p := range 4 {
		pub := pahoClient(t, addr, &paho.Connect{ClientID: fmt.Sprintf("pub%d", p), CleanStart: true, KeepAlive: 30}, nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				payload := fmt.Sprintf("p%d-%d", p, n)
				pctx, pcancel := context.WithTimeout(context.Background(), wait)
				resp, err := pub.Publish(pctx, &paho.Publish{Topic: "inflight/data", QoS: 1, Payload: []byte(payload)})
				pcancel()
				if err != nil || resp.ReasonCode >= 0x80 {
					return // the broker is shutting down
				}
				mu.Lock()
				acked[payload] = true
				mu.Unlock()
			}
		}()
	}
	testwait.For(t, "publishes acknowledged", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) >= 400
	})
	sctx, scancel := context.WithTimeout(context.Background(), 2*wait)
	defer scancel()
	if err := a.Stop(sctx); err != nil {
		t.Fatalf("stop with work in flight: %v", err)
	}
	wg.Wait()

	b := startApp(t, Config{DataDir: data})
	var (
		gotMu sync.Mutex
		got   = map[string]bool{}
	)
	pahoClient(t, b.Addrs()["mqtt"].String(), persistent, func(m *paho.Publish) {
		gotMu.Lock()
		got[string(m.Payload)] = true
		gotMu.Unlock()
	})
	mu.Lock()
	want := len(acked)
	mu.Unlock()
	testwait.For(t, "every acknowledged message and the will delivered", func() bool {
		gotMu.Lock()
		defer gotMu.Unlock()
		if !got["gone"] {
			return false
		}
		for p := range acked {
			if !got[p] {
				return false
			}
		}
		return true
	})
	t.Logf("%d messages acknowledged before the stop, all delivered after the restart (%d received)", want, len(got))
}
