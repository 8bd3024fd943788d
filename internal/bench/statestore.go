package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// stateStoreInvokeTopic is where the Azure IoT Operations state store
// protocol takes requests (a protocol constant, not Edgeport's choice).
const stateStoreInvokeTopic = "statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/command/invoke"

// Correlation data of a state store request: send time (UnixNano), the
// operation and the run tag, so that a response is timed and checked
// without any lookup.
const (
	corrLen = 16
	opSet   = 1
	opGet   = 2
)

// ssClient is one state store client of the statestore scenario: it keeps
// Window requests in flight and times each from publish to response.
type ssClient struct {
	tag    uint32
	tokens chan struct{} // one per request in flight

	// Read goroutine only, merged after the run.
	setHist, getHist *Histogram
	sets, gets       int64
	errs             int64
	foreign          int64
	firstErr         string

	received atomic.Int64
	measure  atomic.Bool // count responses into the figures
}

func (s *ssClient) onPublish(p *packet.Publish) {
	corr := p.Properties.CorrelationData
	if len(corr) != corrLen || binary.LittleEndian.Uint32(corr[12:]) != s.tag {
		s.foreign++
		return
	}
	sent := int64(binary.LittleEndian.Uint64(corr))
	op := corr[8]
	ok := true
	for _, u := range p.Properties.User {
		if u.Key == "__stat" && u.Value != "200" {
			ok = false
		}
	}
	switch {
	case !ok:
	case op == opSet:
		ok = bytes.Equal(p.Payload, []byte("+OK\r\n"))
	case op == opGet:
		ok = len(p.Payload) > 0 && p.Payload[0] == '$'
	default:
		ok = false
	}
	if !ok {
		s.errs++
		if s.firstErr == "" {
			s.firstErr = fmt.Sprintf("%q %v", p.Payload, p.Properties.User)
		}
	} else if s.measure.Load() {
		if op == opSet {
			s.sets++
			s.setHist.Record(time.Now().UnixNano() - sent)
		} else {
			s.gets++
			s.getHist.Record(time.Now().UnixNano() - sent)
		}
	}
	s.received.Add(1)
	<-s.tokens
}

// appendHLC appends the wire form of a hybrid logical clock, as the SDKs
// send it in __ts: wall milliseconds (15 digits), counter (5), node.
func appendHLC(dst []byte, ms int64, counter uint64, node string) []byte {
	dst = appendPadded(dst, uint64(ms), 15)
	dst = append(dst, ':')
	dst = appendPadded(dst, counter, 5)
	dst = append(dst, ':')
	return append(dst, node...)
}

func appendPadded(dst []byte, v uint64, width int) []byte {
	var digits [20]byte
	d := strconv.AppendUint(digits[:0], v, 10)
	for i := len(d); i < width; i++ {
		dst = append(dst, '0')
	}
	return append(dst, d...)
}

// appendRESP appends a RESP3 array of bulk strings, the form of a state
// store request.
func appendRESP(dst []byte, args ...[]byte) []byte {
	dst = append(dst, '*')
	dst = strconv.AppendInt(dst, int64(len(args)), 10)
	dst = append(dst, '\r', '\n')
	for _, a := range args {
		dst = append(dst, '$')
		dst = strconv.AppendInt(dst, int64(len(a)), 10)
		dst = append(dst, '\r', '\n')
		dst = append(dst, a...)
		dst = append(dst, '\r', '\n')
	}
	return dst
}

// stateStore runs Clients state store clients over MQTT 5, each keeping
// Window requests in flight: SETs of Payload-byte values and, with Gets
// percent, GETs of the same keys (Keys per client, set once before the
// timed run when GETs are asked for).
func (r *runner) stateStore(ctx context.Context) (*Result, error) {
	o := r.o
	if o.Version != packet.V5 {
		return nil, fmt.Errorf("the state store protocol needs MQTT 5")
	}
	ss := make([]*ssClient, o.Clients)
	for i := range ss {
		ss[i] = &ssClient{tag: r.tag, tokens: make(chan struct{}, o.Window), setHist: NewHistogram(), getHist: NewHistogram()}
	}
	respTopic := func(i int) string { return fmt.Sprintf("%s/ss/%d", r.prefix, i) }
	r.progress("statestore: connecting %d clients", o.Clients)
	clients, _, err := r.dialMany(ctx, o.Clients, r.server, func(i int) ClientOptions {
		return ClientOptions{ClientID: fmt.Sprintf("%s-ss%d", r.id, i), Window: o.Window, OnPublish: ss[i].onPublish}
	}, func(ctx context.Context, i int, c *Client) error {
		return c.Subscribe(ctx, packet.Subscription{Filter: respTopic(i), QoS: 1})
	})
	if err != nil {
		return nil, err
	}
	defer closeAll(clients)

	value := make([]byte, o.Payload)
	for i := range value {
		value[i] = byte('a' + i%26)
	}
	// worker issues requests on one client until ctx ends or n requests
	// (n > 0), then waits for its outstanding responses.
	worker := func(ctx context.Context, i int, n int64, gets int, sent *int64) error {
		c, s := clients[i], ss[i]
		rng := rand.New(rand.NewPCG(uint64(i), uint64(r.tag)))
		p := packet.Publish{Topic: stateStoreInvokeTopic, QoS: 1}
		p.Properties.ResponseTopic = respTopic(i)
		p.Properties.Set(packet.PropResponseTopic)
		p.Properties.Set(packet.PropCorrelationData)
		// The SDKs' metadata: the requester's hybrid logical clock (which
		// a SET needs), protocol version and client ID.
		clientID := fmt.Sprintf("%s-ss%d", r.id, i)
		p.Properties.User = []packet.UserProperty{{Key: "__ts"}, {Key: "__protVer", Value: "1.0"}, {Key: "__srcId", Value: clientID}}
		var lastMs int64
		var counter uint64
		corr := make([]byte, corrLen)
		binary.LittleEndian.PutUint32(corr[12:], r.tag)
		// The keys and the requests' fixed parts are built once: the load
		// generator shares the cores with the server it measures.
		keys := make([][]byte, o.Keys)
		for k := range keys {
			keys[k] = fmt.Appendf(nil, "%s-k%d-%d", clientID, i, k)
		}
		var payload, ts []byte
		done := ctx.Done()
		for k := int64(0); n == 0 || k < n; k++ {
			select {
			case s.tokens <- struct{}{}:
			case <-done:
				return nil
			case <-c.Done():
				return fmt.Errorf("client %d: connection lost: %w", i, c.Err())
			}
			kn := k % int64(o.Keys)
			if n == 0 {
				kn = int64(rng.IntN(o.Keys))
			}
			key := keys[kn]
			if gets > 0 && rng.IntN(100) < gets {
				corr[8] = opGet
				payload = appendRESP(payload[:0], []byte("GET"), key)
			} else {
				corr[8] = opSet
				payload = appendRESP(payload[:0], []byte("SET"), key, value)
			}
			now := time.Now()
			if ms := now.UnixMilli(); ms != lastMs {
				lastMs, counter = ms, 0
			} else {
				counter++
			}
			ts = appendHLC(ts[:0], lastMs, counter, clientID)
			p.Properties.User[0].Value = string(ts)
			binary.LittleEndian.PutUint64(corr, uint64(now.UnixNano()))
			p.Payload = payload
			p.Properties.CorrelationData = corr
			if err := c.Publish(ctx, &p); err != nil {
				<-s.tokens
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("client %d: %w", i, err)
			}
			*sent++
		}
		return nil
	}
	runAll := func(ctx context.Context, n int64, gets int) ([]int64, error) {
		sent := make([]int64, len(clients))
		errs := make([]error, len(clients))
		var wg sync.WaitGroup
		for i := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = worker(ctx, i, n, gets, &sent[i])
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return nil, err
			}
		}
		return sent, nil
	}
	// waitAnswered waits until every client's requests are answered.
	waitAnswered := func(ctx context.Context, sent []int64) error {
		deadline := time.Now().Add(o.DrainTimeout)
		for {
			all := true
			for i, s := range ss {
				all = all && s.received.Load() >= sent[i]
			}
			if all {
				return nil
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("requests unanswered %s after the run", o.DrainTimeout)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	if o.Gets > 0 {
		r.progress("statestore: setting %d keys per client", o.Keys)
		sent, err := runAll(ctx, int64(o.Keys), 0)
		if err == nil {
			err = waitAnswered(ctx, sent)
		}
		if err != nil {
			return nil, fmt.Errorf("setting the keys: %w", err)
		}
		for _, s := range ss {
			s.received.Store(0)
		}
		// The readers are quiet now: every request was answered.
		for _, s := range ss {
			if s.errs > 0 {
				return nil, fmt.Errorf("setting the keys: %d errors, first: %s", s.errs, s.firstErr)
			}
		}
	}
	for _, s := range ss {
		s.measure.Store(true)
	}
	r.progress("statestore: %d%% GET, %d%% SET for %s, %d requests in flight per client", o.Gets, 100-o.Gets, o.Duration, o.Window)
	start := time.Now()
	runCtx, cancel := context.WithDeadline(ctx, start.Add(o.Duration))
	defer cancel()
	sent, err := runAll(runCtx, 0, o.Gets)
	if err != nil {
		return nil, err
	}
	elapsed := time.Since(start)
	// Figures count the responses received while requests were sent.
	var atEnd int64
	for _, s := range ss {
		atEnd += s.received.Load()
	}
	lostErr := waitAnswered(ctx, sent)
	closeAll(clients)

	res := r.result()
	res.QoS = 1
	res.Publishers = len(clients)
	res.Connections = len(clients)
	res.Seconds = elapsed.Seconds()
	res.GetPercent = o.Gets
	setHist, getHist, all := NewHistogram(), NewHistogram(), NewHistogram()
	var sets, gets int64
	for i, s := range ss {
		res.Sent += sent[i]
		res.Received += s.received.Load()
		res.Errors += s.errs
		res.Foreign += s.foreign
		if res.FirstError == "" {
			res.FirstError = s.firstErr
		}
		sets += s.sets
		gets += s.gets
		setHist.Merge(s.setHist)
		getHist.Merge(s.getHist)
	}
	all.Merge(setHist)
	all.Merge(getHist)
	res.Expected = res.Sent
	res.Lost = max(0, res.Sent-res.Received)
	res.SentRate = float64(res.Sent) / elapsed.Seconds()
	res.ReceivedRate = float64(atEnd) / elapsed.Seconds()
	// The split by operation is over every response, scaled to the rate
	// measured while sending.
	if sets+gets > 0 {
		res.SetRate = res.ReceivedRate * float64(sets) / float64(sets+gets)
		res.GetRate = res.ReceivedRate * float64(gets) / float64(sets+gets)
	}
	res.Latency = summarize(all)
	if sets > 0 {
		l := summarize(setHist)
		res.SetLatency = &l
	}
	if gets > 0 {
		l := summarize(getHist)
		res.GetLatency = &l
	}
	if lostErr != nil && res.Lost == 0 {
		return nil, lostErr
	}
	return res, nil
}
