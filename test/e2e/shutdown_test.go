package e2e

import (
	"context"
	"encoding/json"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestGracefulShutdown stops edgeport with SIGTERM while MQTT 5 clients are
// connected over TCP (Eclipse Paho Go, in process) and WebSocket (MQTT.js):
// both must be told 0x8B (server shutting down) and the process must exit 0.
// A connected MQTT 3.1.1 client (mosquitto_sub), which has no DISCONNECT to
// receive, must not hold the shutdown up.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	dir := nodeDir(t)
	e := startEdgeport(t)

	conn, err := net.DialTimeout("tcp", e.addr(t, "mqtt"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	disconnects := make(chan *paho.Disconnect, 1)
	c := paho.NewClient(paho.ClientConfig{
		Conn:               conn,
		OnServerDisconnect: func(d *paho.Disconnect) { disconnects <- d },
		OnClientError:      func(error) {},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if ca, err := c.Connect(ctx, &paho.Connect{ClientID: "go-shutdown", CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatalf("paho connect: %v", err)
	} else if ca.ReasonCode != 0 {
		t.Fatalf("paho CONNACK reason %#x", ca.ReasonCode)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "shutdown/go", QoS: 1}}}); err != nil {
		t.Fatalf("paho subscribe: %v", err)
	}

	js := startProc(t, 30*time.Second, dir, "node", "shutdown.js", "ws://"+e.addr(t, "ws")+"/mqtt")
	js.waitLine(t, lineWait, "MQTT.js ready", func(l string) bool { return l == `{"event":"ready"}` })

	newMosquitto(t, e).subscribe("-V", "mqttv311", "-t", "shutdown/v311")

	if err := e.stop(); err != nil {
		t.Fatalf("edgeport after SIGTERM: %v", err)
	}

	select {
	case d := <-disconnects:
		if d.ReasonCode != 0x8B {
			t.Errorf("paho got DISCONNECT reason %#x, want 0x8B", d.ReasonCode)
		}
	case <-time.After(5 * time.Second):
		t.Error("paho got no DISCONNECT")
	}

	var events []map[string]any
	for _, l := range js.wait(t, lineWait) {
		var ev map[string]any
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("MQTT.js output %q: %v", l, err)
		}
		events = append(events, ev)
	}
	sawReason := false
	for _, ev := range events {
		if ev["event"] == "disconnect" {
			sawReason = true
			if ev["reasonCode"] != float64(0x8B) {
				t.Errorf("MQTT.js got DISCONNECT %v, want reason 139 (0x8B)", ev)
			}
		}
	}
	if !sawReason {
		t.Errorf("MQTT.js got no DISCONNECT; events %v", events)
	}
}
