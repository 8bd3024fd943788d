package statestore

import (
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// cmdCache is the executor's command cache (Azure IoT Operations SDKs,
// doc/reference/command-cache.md): a request repeated with the same
// correlation data by the same invoker, while the original has not
// expired, gets the original response again without being executed twice.
// QoS 1 redeliveries and invoker retries after a lost PUBACK are such
// repeats; without the cache a repeated SET NX would answer ":-1" to the
// client that actually won. Owned by the executor goroutine.
type cmdCache struct {
	m    map[string]*cached
	fifo []string // insertion order, for eviction; may name removed keys
	head int
	max  int
}

type cached struct {
	payload  []byte
	props    []packet.UserProperty
	deadline time.Time
}

func (c *cmdCache) init(max int) {
	c.m = make(map[string]*cached)
	c.max = max
}

// get returns the live entry under key; it does not allocate.
func (c *cmdCache) get(key []byte, now time.Time) *cached {
	v := c.m[string(key)]
	if v == nil || now.After(v.deadline) {
		return nil
	}
	return v
}

// put stores a response, evicting the oldest entries beyond the bound. It
// returns the key as stored (for the undo log) and whether it stored it.
func (c *cmdCache) put(key []byte, payload []byte, props []packet.UserProperty, deadline time.Time) (string, bool) {
	if c.max <= 0 {
		return "", false
	}
	k := string(key)
	if _, ok := c.m[k]; ok {
		return "", false
	}
	c.m[k] = &cached{payload: payload, props: props, deadline: deadline}
	c.fifo = append(c.fifo, k)
	for len(c.m) > c.max && c.head < len(c.fifo) {
		delete(c.m, c.fifo[c.head])
		c.fifo[c.head] = ""
		c.head++
	}
	c.compact()
	return k, true
}

func (c *cmdCache) remove(key string) { delete(c.m, key) }

// sweep drops expired entries from the front of the insertion order. An
// entry with a long deadline can shelter shorter-lived ones behind it; they
// are no longer served (get checks the deadline) and go when it does or
// when the bound evicts them.
func (c *cmdCache) sweep(now time.Time) {
	for c.head < len(c.fifo) {
		k := c.fifo[c.head]
		if v, ok := c.m[k]; ok {
			if !now.After(v.deadline) {
				break
			}
			delete(c.m, k)
		}
		c.fifo[c.head] = ""
		c.head++
	}
	c.compact()
}

// compact reclaims the consumed front of fifo once it is most of the slice.
func (c *cmdCache) compact() {
	if c.head > 64 && c.head*2 > len(c.fifo) {
		n := copy(c.fifo, c.fifo[c.head:])
		clear(c.fifo[n:])
		c.fifo = c.fifo[:n]
		c.head = 0
	}
}
