package broker

import (
	"sync"
	"sync/atomic"
)

// A Service is an Edgeport component that receives the messages published
// to one topic name in-process, straight from the router, instead of
// through an internal client's session: no PUBLISH is encoded for it, no
// pipe, no inflight window, no acknowledgement. The state store serves its
// invoke topic so and answers with Publish.
//
// What a publisher sees does not change: its PUBLISH is authorized, checked
// and acknowledged as any other (the service counts as a matching
// subscriber, so a QoS 1 request gets Success, not 0x10), and subscribers
// of the topic still get the message.
type Service func(m *Message)

// services maps topic names to the Service taking them; copied on write, so
// routing reads it with one atomic load.
type services struct {
	mu sync.Mutex // serialises writers of m
	m  atomic.Pointer[map[string]Service]
}

// Serve makes h receive every message routed to the topic name (exact: no
// wildcards), until the returned stop is called. h runs on the publisher's
// goroutine (a connection's reader, or whoever calls Publish) with no
// broker lock held, after the message's subscribers got it; it may block to
// push back on the publisher, and may call Publish. m is immutable and
// shared with the subscribers: h may keep it, and what it points to, but
// never change it. An expired message is not handed over. A topic has one
// service at a time: Serve replaces an earlier one.
func (b *Broker) Serve(topicName string, h Service) (stop func()) {
	b.svcs.set(topicName, h)
	var once sync.Once
	return func() { once.Do(func() { b.svcs.set(topicName, nil) }) }
}

func (s *services) set(name string, h Service) {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := make(map[string]Service)
	if cur := s.m.Load(); cur != nil {
		for k, v := range *cur {
			next[k] = v
		}
	}
	if h == nil {
		delete(next, name)
	} else {
		next[name] = h
	}
	s.m.Store(&next)
}

// lookup returns the service of a topic name, nil when none.
func (s *services) lookup(name string) Service {
	m := s.m.Load()
	if m == nil || len(*m) == 0 {
		return nil
	}
	return (*m)[name]
}

// MaxPacketSize is the largest packet the broker accepts from a client (0:
// no limit); a service answering for the broker keeps its answers within it
// as a publishing client would have to.
func (b *Broker) MaxPacketSize() int { return b.o().MaxPacketSize }
