package app

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/testwait"
)

// persistentConnect is the CONNECT of a client whose session outlives its
// connection by an hour.
func persistentConnect(id string, cleanStart bool) *paho.Connect {
	expiry := uint32(3600)
	return &paho.Connect{ClientID: id, CleanStart: cleanStart, KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}
}

// next waits for the next message c receives on a topic starting with
// prefix.
func (c *nodeClient) next(t *testing.T, prefix string) *paho.Publish {
	t.Helper()
	var got *paho.Publish
	testwait.For(t, c.id+" receiving on "+prefix, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, m := range c.msgs {
			if len(m.Topic) >= len(prefix) && m.Topic[:len(prefix)] == prefix {
				got = m
				c.msgs = append(c.msgs[:i], c.msgs[i+1:]...)
				return true
			}
		}
		return false
	})
	return got
}

// disconnected waits for the server's DISCONNECT to c.
func (c *nodeClient) disconnected(t *testing.T) *paho.Disconnect {
	t.Helper()
	select {
	case d := <-c.discs:
		return d
	case <-time.After(testwait.Timeout):
		t.Fatalf("%s: no DISCONNECT from the server", c.id)
		return nil
	}
}

// TestClusterState runs serve --cluster's cluster state on three nodes:
// sessions, retained messages and ownership are the cluster's, not a
// node's.
func TestClusterState(t *testing.T) {
	apps := startCluster(t, 3)
	n1, n2, n3 := apps[0], apps[1], apps[2]

	t.Run("a persistent session resumes on another node with what was queued", func(t *testing.T) {
		dev, _ := dialNodeWith(t, n1, persistentConnect("st-dev", true))
		dev.subscribe(t, paho.SubscribeOptions{Topic: "st/cmd/#", QoS: 1})
		if err := dev.Disconnect(&paho.Disconnect{}); err != nil {
			t.Fatal(err)
		}
		testwait.For(t, "st-dev offline on node1", func() bool {
			info, ok := n1.Broker().Session("st-dev")
			return ok && !info.Online
		})
		syncCluster(t, apps)
		pub := dialNode(t, n2, "st-pub")
		for i := range 5 {
			// Acknowledged once the message is queued for st-dev.
			pub.publish(t, &paho.Publish{Topic: "st/cmd/x", QoS: 1, Payload: []byte(fmt.Sprintf("m%d", i))})
		}
		syncCluster(t, apps)
		back, ack := dialNodeWith(t, n3, persistentConnect("st-dev", false))
		if !ack.SessionPresent {
			t.Fatal("CONNACK on node3: session not present")
		}
		for i := range 5 {
			if m := back.next(t, "st/cmd/"); string(m.Payload) != fmt.Sprintf("m%d", i) || m.QoS != 1 {
				t.Fatalf("message %d on node3: %s QoS %d %q", i, m.Topic, m.QoS, m.Payload)
			}
		}
		if _, ok := n1.Broker().Session("st-dev"); ok {
			t.Error("node1 still holds the session node3 took")
		}

		t.Run("a connection on another node takes it over with 0x8E", func(t *testing.T) {
			again, ack := dialNodeWith(t, n1, persistentConnect("st-dev", false))
			if !ack.SessionPresent {
				t.Error("CONNACK on node1: session not present")
			}
			if d := back.disconnected(t); d.ReasonCode != byte(packet.SessionTakenOver) {
				t.Fatalf("node3's connection got DISCONNECT 0x%02X, want 0x8E", d.ReasonCode)
			}
			// The subscription came along to node1.
			syncCluster(t, apps)
			pub.publish(t, &paho.Publish{Topic: "st/cmd/y", QoS: 1, Payload: []byte("after")})
			if m := again.next(t, "st/cmd/"); string(m.Payload) != "after" {
				t.Fatalf("after the takeover: %q", m.Payload)
			}
		})
	})

	t.Run("a retained message published on one node reaches a new subscriber on another", func(t *testing.T) {
		pub := dialNode(t, n1, "st-rpub")
		pub.publish(t, &paho.Publish{Topic: "st/ret", QoS: 1, Retain: true, Payload: []byte("kept")})
		sub := dialNode(t, n3, "st-rsub")
		sub.subscribe(t, paho.SubscribeOptions{Topic: "st/ret", QoS: 1})
		if m := sub.next(t, "st/ret"); string(m.Payload) != "kept" || !m.Retain {
			t.Fatalf("node3's new subscriber got %q retain=%v", m.Payload, m.Retain)
		}
	})
}

// TestClusterStopWithoutQuorum: the last node of a cluster, its peers
// gone, stops at once. A QoS 1 publish waiting for JetStream's
// acknowledgement (which cannot come) is not acknowledged, a CONNECT
// waiting for its claim is refused, and the stop does not wait out
// AckTimeout or nats.go's request timeouts (the stop's bound, wait, is
// shorter than either sum). Nothing is left running (TestMain).
func TestClusterStopWithoutQuorum(t *testing.T) {
	apps := startCluster(t, 3)
	n1 := apps[0]
	dev, _ := dialNodeWith(t, n1, persistentConnect("nq-dev", true))
	dev.subscribe(t, paho.SubscribeOptions{Topic: "nq/#", QoS: 1})
	pub := dialNode(t, n1, "nq-pub")
	for i, a := range apps[1:] {
		began := time.Now()
		stopApp(t, a)
		t.Logf("node%d stopped in %v", i+2, time.Since(began))
	}

	// node1 alone has no quorum: dev's delivery cannot be made durable.
	before := n1.Broker().Counters()
	published := make(chan string, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*wait)
		defer cancel()
		r, err := pub.Publish(ctx, &paho.Publish{Topic: "nq/x", QoS: 1, Payload: []byte("x")})
		switch {
		case err != nil:
			published <- "not acknowledged: " + err.Error()
		default:
			published <- fmt.Sprintf("PUBACK 0x%02X", r.ReasonCode)
		}
	}()
	testwait.For(t, "the publish reaching node1", func() bool { return n1.Broker().Counters().PublishesIn > before.PublishesIn })
	connected := make(chan error, 1)
	conn, err := net.Dial("tcp", n1.Addrs()["mqtt"].String())
	if err != nil {
		t.Fatal(err)
	}
	late := paho.NewClient(paho.ClientConfig{Conn: conn, PacketTimeout: 2 * wait})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*wait)
		defer cancel()
		_, err := late.Connect(ctx, persistentConnect("nq-late", true))
		connected <- err
	}()
	// Open or already refused: node1 may answer the CONNECT with 0x88 at
	// once (it knows it has no quorum) and close the connection between
	// two looks at the gauge.
	testwait.For(t, "the late CONNECT reaching node1", func() bool {
		return n1.Broker().Counters().Listeners["mqtt"].Open > before.Listeners["mqtt"].Open || len(connected) > 0
	})

	began := time.Now()
	stopApp(t, n1) // fails the test if it overruns wait
	t.Logf("node1 stopped without a quorum in %v", time.Since(began))
	if got := <-published; got == "PUBACK 0x00" {
		t.Errorf("a publish acknowledged without a quorum: %s", got)
	} else {
		t.Logf("publish without a quorum: %s", got)
	}
	if err := <-connected; err == nil {
		t.Error("a CONNECT accepted without a quorum")
	} else {
		t.Logf("CONNECT without a quorum: %v", err)
	}
}
