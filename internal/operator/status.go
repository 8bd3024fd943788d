package operator

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/edgeport/edgeport/internal/config"
)

// statusWriter copies each resource's status from the store to its custom
// resource's status subresource, with the Accepted condition and the
// Kubernetes generation the status describes. Writes coalesce: a key
// marked dirty many times is written once; a status whose conditions and
// generation did not change (counters only) waits StatusInterval since
// its last write.
type statusWriter struct {
	op   *Operator
	wake chan struct{}

	mu    sync.Mutex // guards dirty and keys
	dirty map[config.Key]struct{}
	keys  map[config.Key]*keyStatus
}

// keyStatus is what the writer knows of one resource.
type keyStatus struct {
	// The latest accepted generation: Kubernetes generation gen is the
	// store's generation storeGen.
	gen, storeGen int64
	// prevGen is the Kubernetes generation that the store's status
	// describes while it has not caught up with storeGen.
	prevGen  int64
	accepted config.Condition
	// rejectedGen is the latest generation refused (0: none since the
	// last accepted one); its Accepted condition is False.
	rejectedGen int64

	written   []byte // the status last written
	signature string // its conditions and generation
	writtenAt time.Time
	// ready is the Ready condition (status and reason) last recorded as
	// an Event: a change of it is recorded once it is written.
	ready config.Condition
}

func newStatusWriter(op *Operator) *statusWriter {
	return &statusWriter{op: op, wake: make(chan struct{}, 1), dirty: map[config.Key]struct{}{}, keys: map[config.Key]*keyStatus{}}
}

// NeedLeaderElection: only the leader writes status.
func (w *statusWriter) NeedLeaderElection() bool { return true }

func (w *statusWriter) enqueue(k config.Key) {
	w.mu.Lock()
	w.dirty[k] = struct{}{}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *statusWriter) state(k config.Key) *keyStatus {
	ks := w.keys[k]
	if ks == nil {
		ks = &keyStatus{}
		w.keys[k] = ks
	}
	return ks
}

func (w *statusWriter) accepted(k config.Key, gen, storeGen int64) {
	w.mu.Lock()
	ks := w.state(k)
	if storeGen != ks.storeGen {
		ks.prevGen = ks.gen
	}
	ks.gen, ks.storeGen, ks.rejectedGen = gen, storeGen, 0
	setCondition(&ks.accepted, config.ConditionTrue, ReasonApplied, "")
	w.mu.Unlock()
	w.enqueue(k)
}

// rejected sets k's Accepted condition False for generation gen; false
// when that generation was already refused for the same reason and
// message (a repeated reconcile, which records no second Event).
func (w *statusWriter) rejected(k config.Key, gen int64, reason, msg string) bool {
	w.mu.Lock()
	ks := w.state(k)
	repeated := ks.rejectedGen == gen && ks.accepted.Status == config.ConditionFalse &&
		ks.accepted.Reason == reason && ks.accepted.Message == msg
	ks.rejectedGen = gen
	setCondition(&ks.accepted, config.ConditionFalse, reason, msg)
	w.mu.Unlock()
	w.enqueue(k)
	return !repeated
}

func (w *statusWriter) forget(k config.Key) {
	w.mu.Lock()
	delete(w.keys, k)
	delete(w.dirty, k)
	w.mu.Unlock()
}

func setCondition(c *config.Condition, status, reason, msg string) {
	if c.Status != status {
		c.LastTransitionTime = time.Now().UTC().Truncate(time.Second)
	}
	c.Type, c.Status, c.Reason, c.Message = ConditionAccepted, status, reason, msg
}

// Start writes statuses until ctx ends (a manager runnable, leader only).
func (w *statusWriter) Start(ctx context.Context) error {
	store := w.op.waitStore(ctx)
	if store == nil {
		return nil
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.wake:
		case <-tick.C:
		}
		w.mu.Lock()
		keys := make([]config.Key, 0, len(w.dirty))
		for k := range w.dirty {
			keys = append(keys, k)
		}
		clear(w.dirty)
		w.mu.Unlock()
		slices.SortFunc(keys, func(a, b config.Key) int { return strings.Compare(a.String(), b.String()) })
		for _, k := range keys {
			if ctx.Err() != nil {
				return nil
			}
			if !w.write(ctx, store, k) {
				w.mu.Lock()
				w.dirty[k] = struct{}{} // later: interval not over, or the write failed
				w.mu.Unlock()
			}
		}
	}
}

// write writes k's status if it changed and is due; false: try again later.
func (w *statusWriter) write(ctx context.Context, store *config.Store, k config.Key) bool {
	w.mu.Lock()
	ks := w.keys[k]
	if ks == nil || (ks.gen == 0 && ks.rejectedGen == 0) {
		w.mu.Unlock()
		return true // not (or no longer) one of ours
	}
	st := config.Status{}
	obj, ok := store.Get(k)
	if ok && obj.Status != nil && obj.Metadata.Annotations[config.AnnotationConfigFile] == Source(w.op.o.Namespace, k.Kind, k.Name) {
		st = *obj.Status
	}
	// The store's status describes a store generation; say which
	// Kubernetes generation that is.
	switch {
	case ks.rejectedGen > 0:
		st.ObservedGeneration = ks.rejectedGen
	case st.ObservedGeneration >= ks.storeGen:
		st.ObservedGeneration = ks.gen
	default:
		st.ObservedGeneration = ks.prevGen
	}
	st.Conditions = append([]config.Condition{ks.accepted}, st.Conditions...)
	data, err := json.Marshal(st)
	if err != nil {
		w.mu.Unlock()
		return true
	}
	sig, _ := json.Marshal(struct {
		G int64
		C []config.Condition
	}{st.ObservedGeneration, st.Conditions})
	now := time.Now()
	switch {
	case bytes.Equal(data, ks.written):
		w.mu.Unlock()
		return true
	case string(sig) == ks.signature && now.Sub(ks.writtenAt) < w.op.o.StatusInterval:
		w.mu.Unlock()
		return false
	}
	w.mu.Unlock()

	patch, _ := json.Marshal([]map[string]any{{"op": "add", "path": "/status", "value": json.RawMessage(data)}})
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(GVK(k.Kind))
	u.SetNamespace(w.op.o.Namespace)
	u.SetName(k.Name)
	err = w.op.c.Status().Patch(ctx, u, client.RawPatch(types.JSONPatchType, patch))
	if apierrors.IsNotFound(err) {
		return true // deleted; its reconcile forgets it
	}
	if err != nil {
		w.op.log.Warn("status not written", "resource", k.String(), "err", err)
		return false
	}
	var ready *config.Condition
	if c := st.Condition(config.ConditionReady); c != nil {
		ready = c
	}
	note := false
	w.mu.Lock()
	if ks := w.keys[k]; ks != nil {
		ks.written, ks.signature, ks.writtenAt = data, string(sig), now
		if ready != nil && (ready.Status != ks.ready.Status || ready.Reason != ks.ready.Reason) {
			ks.ready, note = *ready, true
		}
	}
	w.mu.Unlock()
	if note {
		// u is the object the API server returned: it has the UID the
		// Event refers to.
		w.op.recordReady(u, *ready)
	}
	return true
}
