package portal

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/edgeport/edgeport/internal/mqtt/client"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// Bounds of the topic browser: what a busy broker can make it hold.
const (
	// DefaultMaxTopics is how many topics the browser tracks; later new
	// topics are counted, not shown.
	DefaultMaxTopics = 10000
	// maxPayload is how much of each topic's last payload is kept.
	maxPayload = 16 << 10
	// previewLen is how much of the payload the tree shows.
	previewLen = 80
	// maxDelta bounds one update sent to a page.
	maxDelta = 2000
)

// topicEntry is what the browser knows of one topic.
type topicEntry struct {
	Topic       string    `json:"topic"`
	Size        int       `json:"size"` // bytes of the last payload
	Retained    bool      `json:"retained"`
	QoS         byte      `json:"qos"`
	Count       uint64    `json:"count"` // messages seen since the browser started watching
	Rate        float64   `json:"rate"`  // messages per second, smoothed
	Last        time.Time `json:"last"`
	Preview     string    `json:"preview"`
	ContentType string    `json:"contentType,omitempty"`

	payload   []byte
	user      []packet.UserProperty
	ver       uint64 // watcher version of the last change
	prevCount uint64 // Count at the last rate update
}

// TopicMessage is the payload viewer's document: the last message of a topic.
type TopicMessage struct {
	Topic       string                `json:"topic"`
	Payload     []byte                `json:"payload"` // base64 in JSON
	Size        int                   `json:"size"`
	Truncated   bool                  `json:"truncated"`
	Retained    bool                  `json:"retained"`
	QoS         byte                  `json:"qos"`
	Time        time.Time             `json:"time"`
	ContentType string                `json:"contentType,omitempty"`
	User        []packet.UserProperty `json:"userProperties,omitempty"`
}

// topicWatcher subscribes the portal's client to every topic while at
// least one page watches, and keeps the last message and rate of each. It
// is bounded: at most max topics, at most maxPayload bytes each, and pages
// get at most one update a second. The subscription is QoS 0, so a broker
// that delivers faster than the portal takes drops (slow consumer) rather
// than queues for it.
type topicWatcher struct {
	cl  *client.Client
	max int

	subMu   sync.Mutex // serialises subscribing and unsubscribing; guards viewers
	viewers int

	mu        sync.Mutex // guards the fields below
	topics    map[string]*topicEntry
	ver       uint64
	untracked uint64 // messages on topics beyond max
	changed   chan struct{}
	lastTick  time.Time
}

func newTopicWatcher(cl *client.Client, max int) *topicWatcher {
	if max <= 0 {
		max = DefaultMaxTopics
	}
	return &topicWatcher{cl: cl, max: max, topics: make(map[string]*topicEntry), changed: make(chan struct{})}
}

// watch adds a viewer, subscribing on the first; the returned function
// removes it, unsubscribing on the last.
func (w *topicWatcher) watch(ctx context.Context) (func(), error) {
	w.subMu.Lock()
	defer w.subMu.Unlock()
	if w.viewers == 0 {
		err := w.cl.Subscribe(ctx, client.Subscription{
			Filters: []packet.Subscription{{Filter: "#", QoS: 0, RetainAsPublished: true}},
			Handler: w.onMessage,
		})
		if err != nil {
			return nil, fmt.Errorf("subscribing to #: %w", err)
		}
	}
	w.viewers++
	return func() {
		w.subMu.Lock()
		defer w.subMu.Unlock()
		w.viewers--
		if w.viewers == 0 {
			uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = w.cl.Unsubscribe(uctx, "#") // a lost connection drops it anyway
		}
	}, nil
}

func (w *topicWatcher) onMessage(_ context.Context, m *client.Message) {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	e := w.topics[m.Topic]
	if e == nil {
		if len(w.topics) >= w.max {
			w.untracked++
			return
		}
		e = &topicEntry{Topic: m.Topic}
		w.topics[m.Topic] = e
	}
	w.ver++
	e.ver = w.ver
	e.Count++
	e.Last = now
	e.Size = len(m.Payload)
	e.Retained, e.QoS, e.ContentType = m.Retain, m.QoS, m.ContentType
	e.payload = append(e.payload[:0], m.Payload[:min(len(m.Payload), maxPayload)]...)
	e.user = append(e.user[:0], m.User...)
	e.Preview = preview(m.Payload)
}

// preview is the start of a payload as text, or its first bytes in hex
// when it is not UTF-8.
func preview(p []byte) string {
	if utf8.Valid(p) {
		s := string(p[:min(len(p), previewLen*4)])
		if utf8.RuneCountInString(s) > previewLen {
			r := []rune(s)
			return string(r[:previewLen]) + "…"
		}
		return s
	}
	n := min(len(p), previewLen/2)
	s := fmt.Sprintf("0x% x", p[:n])
	if n < len(p) {
		s += "…"
	}
	return s
}

// tick updates the rates (once a second, from the owner's goroutine) and
// wakes the pages.
func (w *topicWatcher) tick(now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	dt := now.Sub(w.lastTick).Seconds()
	w.lastTick = now
	if dt <= 0 || dt > 60 {
		dt = 0
	}
	for _, e := range w.topics {
		if dt == 0 {
			e.prevCount = e.Count
			continue
		}
		inst := float64(e.Count-e.prevCount) / dt
		e.prevCount = e.Count
		rate := 0.5*e.Rate + 0.5*inst
		if rate < 0.01 {
			rate = 0
		}
		if rate != e.Rate {
			e.Rate = rate
			w.ver++
			e.ver = w.ver
		}
	}
	close(w.changed)
	w.changed = make(chan struct{})
}

// topicDelta is one update sent to a page.
type topicDelta struct {
	Version   uint64        `json:"version"`
	Full      bool          `json:"full"` // a snapshot: forget what came before
	Topics    []*topicEntry `json:"topics"`
	Total     int           `json:"total"`     // topics tracked
	Untracked uint64        `json:"untracked"` // messages on topics beyond the limit
	Max       int           `json:"max"`
	More      bool          `json:"more"` // more changes than one update carries
}

// since returns what changed after version ver (everything when ver is
// 0), sorted by topic, and the channel closed at the next tick.
func (w *topicWatcher) since(ver uint64) (topicDelta, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	d := topicDelta{Version: w.ver, Full: ver == 0, Total: len(w.topics), Untracked: w.untracked, Max: w.max}
	for _, e := range w.topics {
		if e.ver > ver {
			c := *e
			c.payload, c.user = nil, nil
			d.Topics = append(d.Topics, &c)
		}
	}
	if len(d.Topics) > maxDelta {
		// The oldest changes first; the page asks for the rest next.
		sort.Slice(d.Topics, func(i, j int) bool { return d.Topics[i].ver < d.Topics[j].ver })
		d.Topics, d.More = d.Topics[:maxDelta], true
		d.Version = d.Topics[maxDelta-1].ver
	}
	sort.Slice(d.Topics, func(i, j int) bool { return d.Topics[i].Topic < d.Topics[j].Topic })
	if d.Topics == nil {
		d.Topics = []*topicEntry{}
	}
	return d, w.changed
}

// message returns the last message of topic.
func (w *topicWatcher) message(topic string) (TopicMessage, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	e := w.topics[topic]
	if e == nil {
		return TopicMessage{}, false
	}
	return TopicMessage{Topic: e.Topic, Payload: append([]byte(nil), e.payload...), Size: e.Size,
		Truncated: e.Size > len(e.payload), Retained: e.Retained, QoS: e.QoS, Time: e.Last,
		ContentType: e.ContentType, User: append([]packet.UserProperty(nil), e.user...)}, true
}
