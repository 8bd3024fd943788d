package broker

import (
	"context"
	"strconv"
	"time"
)

func timeSince(t time.Time) float64 { return time.Since(t).Seconds() }

// runSys publishes broker statistics as retained messages under $SYS every
// SysInterval, in the layout mosquitto users know. The interval is read
// again after each period, so SetOptions changes it (or turns $SYS on and
// off) live; while off it is looked at every second.
func (b *Broker) runSys(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		iv := b.o().SysInterval
		if iv < 0 {
			t.Reset(time.Second)
			continue
		}
		b.publishSys()
		t.Reset(iv)
	}
}

func (b *Broker) publishSys() {
	c := b.Counters()
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }
	i := func(v int64) string { return strconv.FormatInt(v, 10) }
	var dropped uint64
	for _, n := range c.Dropped {
		dropped += n
	}
	for _, kv := range [...][2]string{
		{"$SYS/broker/version", "edgeport " + b.o().Version},
		{"$SYS/broker/uptime", strconv.FormatInt(int64(c.Uptime), 10) + " seconds"},
		{"$SYS/broker/clients/connected", i(c.Connected)},
		{"$SYS/broker/clients/total", i(c.Sessions)},
		{"$SYS/broker/clients/disconnected", i(c.Sessions - c.Connected)},
		{"$SYS/broker/subscriptions/count", i(c.Subscriptions)},
		{"$SYS/broker/retained messages/count", i(c.Retained)},
		{"$SYS/broker/messages/received", u(c.MessagesIn)},
		{"$SYS/broker/messages/sent", u(c.MessagesOut)},
		{"$SYS/broker/messages/dropped", u(dropped)},
		{"$SYS/broker/publish/messages/received", u(c.PublishesIn)},
		{"$SYS/broker/bytes/received", u(c.BytesIn)},
		{"$SYS/broker/bytes/sent", u(c.BytesOut)},
	} {
		m := &Message{Topic: kv[0], Payload: []byte(kv[1]), Retain: true}
		b.Publish(m)
	}
}
