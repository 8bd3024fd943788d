package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"
)

// runRaw measures the OPC UA exchange alone: gopcua subscribed straight to
// the node-opcua server, no Edgeport, no MQTT. It separates what the
// server and the client library deliver from what Edgeport adds.
// outstanding 0 uses gopcua's own publish loop (one request in flight per
// session); outstanding K >= 1 sends the PublishRequests itself, K at a
// time.
func runRaw(p params) error {
	items, interval, sessions, subs, outstanding, duration, warmup := p.items, p.interval, p.sessions, p.subs, p.out, p.duration, p.warmup
	dir, err := os.MkdirTemp("", "bench-opcua-raw-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, err := startServer(dir, p)
	if err != nil {
		return err
	}
	defer srv.Stop() // a second Stop (stopServer's) returns at once

	var measuring atomic.Bool
	var samples, responses atomic.Int64
	var latMu sync.Mutex
	var lat []float64
	record := func(dcn *ua.DataChangeNotification, now time.Time) {
		if !measuring.Load() {
			return
		}
		responses.Add(1)
		samples.Add(int64(len(dcn.MonitoredItems)))
		latMu.Lock()
		for _, mi := range dcn.MonitoredItems {
			if mi.Value != nil {
				lat = append(lat, now.Sub(mi.Value.SourceTimestamp).Seconds())
			}
		}
		latMu.Unlock()
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	perSession := (items + sessions - 1) / sessions
	for si := 0; si < sessions && subs > 0; si++ {
		c, err := opcua.NewClient(srv.URL, opcua.SecurityMode(ua.MessageSecurityModeNone), opcua.AutoReconnect(false),
			opcua.RequestTimeout(30*time.Second), opcua.MaxChunkCount(0))
		if err != nil {
			return err
		}
		if err := c.Connect(ctx); err != nil {
			return err
		}
		defer c.Close(context.Background())
		lo, hi := si*perSession, min((si+1)*perSession, items)
		perSub := (hi - lo + subs - 1) / subs
		notifs := make(chan *opcua.PublishNotificationData, 1024)
		for k := 0; k < subs; k++ {
			var reqs []*ua.MonitoredItemCreateRequest
			for i := lo + k*perSub; i < min(lo+(k+1)*perSub, hi); i++ {
				r := opcua.NewMonitoredItemCreateRequestWithDefaults(ua.NewStringNodeID(2, fmt.Sprintf("Bulk/%d", i)), ua.AttributeIDValue, uint32(i))
				r.RequestedParameters.SamplingInterval = float64(p.samplingMs())
				r.RequestedParameters.QueueSize = 1
				reqs = append(reqs, r)
			}
			if outstanding == 0 {
				sub, err := c.Subscribe(ctx, &opcua.SubscriptionParameters{Interval: interval, MaxKeepAliveCount: 20, LifetimeCount: 60}, notifs)
				if err != nil {
					return err
				}
				if _, err := sub.Monitor(ctx, ua.TimestampsToReturnBoth, reqs...); err != nil {
					return err
				}
				continue
			}
			var cres *ua.CreateSubscriptionResponse
			if err := c.Send(ctx, &ua.CreateSubscriptionRequest{
				RequestedPublishingInterval: float64(interval / time.Millisecond), RequestedLifetimeCount: 60,
				RequestedMaxKeepAliveCount: 20, MaxNotificationsPerPublish: 0, PublishingEnabled: true,
			}, func(r ua.Response) error { cres = r.(*ua.CreateSubscriptionResponse); return nil }); err != nil {
				return err
			}
			if err := c.Send(ctx, &ua.CreateMonitoredItemsRequest{SubscriptionID: cres.SubscriptionID, TimestampsToReturn: ua.TimestampsToReturnBoth, ItemsToCreate: reqs},
				func(ua.Response) error { return nil }); err != nil {
				return err
			}
		}
		if outstanding == 0 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-ctx.Done():
						return
					case n := <-notifs:
						if dcn, ok := n.Value.(*ua.DataChangeNotification); ok {
							record(dcn, time.Now())
						}
					}
				}
			}()
			continue
		}
		// Own publish loop: K goroutines, each with one request in
		// flight, acknowledging what it received in its next request.
		for k := 0; k < outstanding; k++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var acks []*ua.SubscriptionAcknowledgement
				for ctx.Err() == nil {
					req := &ua.PublishRequest{SubscriptionAcknowledgements: acks}
					if acks == nil {
						req.SubscriptionAcknowledgements = []*ua.SubscriptionAcknowledgement{}
					}
					var res *ua.PublishResponse
					err := c.Send(ctx, req, func(r ua.Response) error { res, _ = r.(*ua.PublishResponse); return nil })
					acks = nil
					if err != nil || res == nil {
						if ctx.Err() == nil {
							fmt.Fprintln(os.Stderr, "publish:", err)
						}
						continue
					}
					now := time.Now()
					if res.NotificationMessage != nil && len(res.NotificationMessage.NotificationData) > 0 {
						acks = []*ua.SubscriptionAcknowledgement{{SubscriptionID: res.SubscriptionID, SequenceNumber: res.NotificationMessage.SequenceNumber}}
						for _, d := range res.NotificationMessage.NotificationData {
							if dcn, ok := d.Value.(*ua.DataChangeNotification); ok {
								record(dcn, now)
							}
						}
					}
				}
			}()
		}
	}
	fmt.Fprintf(os.Stderr, "subscribed: %d sessions x %d subscriptions, %d outstanding publish requests each; warming up %s\n", sessions, subs, outstanding, warmup)
	time.Sleep(warmup)
	w := startWindow(srv.URL, srv.PID(), srv.PID(), os.Getpid())
	measuring.Store(true)
	time.Sleep(duration)
	measuring.Store(false)
	res := w.end()
	el := res.seconds
	nodeCPU, selfCPU := res.cpu[0], res.cpu[1]
	cancel()
	latMu.Lock()
	l := slices.Clone(lat)
	latMu.Unlock()
	slices.Sort(l)
	pct := func(p float64) float64 {
		if len(l) == 0 {
			return 0
		}
		return l[min(len(l)-1, int(p*float64(len(l))))] * 1000
	}
	n := samples.Load()
	fmt.Printf("raw gopcua: items=%d interval=%s sampling=%dms sessions=%d subs=%d outstanding=%d duration=%.0fs\n", items, interval, p.samplingMs(), sessions, subs, outstanding, el)
	fmt.Printf("samples/s received: %.0f (target %.0f/s, server generated %.0f/s), publish responses/s: %.1f\n", float64(n)/el, float64(items)/interval.Seconds(), res.generated, float64(responses.Load())/el)
	fmt.Printf("latency source->client: p50 %.1f ms, p99 %.1f ms; client CPU %.0f%%, node-opcua CPU %.0f%%\n", pct(0.5), pct(0.99), selfCPU*100, nodeCPU*100)
	res.print()
	stopServer(dir, srv, p)
	return nil
}
