package api

import (
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/edgeport/edgeport/internal/config"
)

// WatchEvent is one line of a watch stream (GET /api/v1/<plural>?watch=true),
// as Kubernetes' watch sends them: ADDED for every resource that exists
// when the watch starts and for each one created later, MODIFIED, DELETED
// (with the last state seen), and one BOOKMARK without object once the
// resources that existed at the start have been sent.
type WatchEvent struct {
	Type   string         `json:"type"`
	Object *config.Object `json:"object"`
}

// watchBuffer bounds the changes waiting for a slow watcher; past it the
// stream ends, and the client lists and watches again (as a Kubernetes
// watch that expired).
const watchBuffer = 1024

// watch streams the kind's resources matching sel, then every change, as
// JSON lines, until the client goes away or falls behind.
func (s *Server) watch(w http.ResponseWriter, r *http.Request, def *config.KindDef, sel config.Selector) {
	rc := http.NewResponseController(w)
	changed := make(chan config.Key, watchBuffer)
	behind := make(chan struct{})
	var once sync.Once // notifications of different changes may run concurrently
	remove := s.store.WatchUntilRemoved(func(k config.Key) {
		if k.Kind != def.Kind {
			return
		}
		select {
		case changed <- k:
		default:
			once.Do(func() { close(behind) })
		}
	})
	defer remove()

	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	seen := map[string]*config.Object{}
	send := func(typ string, o *config.Object) bool {
		// Each line extends the write deadline: the server's write
		// timeout is for answers, not for a stream.
		_ = rc.SetWriteDeadline(time.Now().Add(time.Minute))
		if err := enc.Encode(WatchEvent{Type: typ, Object: o}); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	for _, o := range s.store.List(def.Kind, sel) {
		seen[o.Metadata.Name] = o
		if !send("ADDED", o) {
			return
		}
	}
	if !send("BOOKMARK", nil) { // the initial list is complete
		return
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case <-behind:
			return
		case k := <-changed:
			o, ok := s.store.Get(k)
			old := seen[k.Name]
			switch {
			case ok && sel.Matches(o.Metadata.Labels):
				typ := "MODIFIED"
				if old == nil {
					typ = "ADDED"
				}
				seen[k.Name] = o
				if !send(typ, o) {
					return
				}
			case old != nil:
				// Deleted, or no longer matching the selector.
				delete(seen, k.Name)
				if !send("DELETED", old) {
					return
				}
			}
		}
	}
}
