package operator

import (
	"fmt"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/edgeport/edgeport/internal/config"
)

// EventController is the reportingController of the Events operator mode
// records (events.k8s.io/v1, through controller-runtime's recorder): what
// `kubectl describe` and `kubectl events` show beside a resource.
const EventController = "edgeport.io/operator"

// Event reasons and actions. A rejection's reason is the Accepted
// condition's (Invalid, Conflict); a resource that stops being Ready is
// recorded with the Ready condition's own reason (BindFailed, TLSError ...).
const (
	EventApplied  = "Applied"  // Normal: a generation was applied to the running Edgeport
	EventReady    = "Ready"    // Normal: the resource became Ready
	ActionApply   = "Apply"    // applying a generation
	ActionObserve = "Observe"  // a change of the running resource's status
	maxEventNote  = 1024 - 100 // events.k8s.io/v1 refuses notes of 1 kB or more; room for "..."
)

// record records an Event on the custom resource u (which carries its
// kind, namespace, name and UID). Events are best effort: the recorder
// sends them in the background and a failure only logs.
func (op *Operator) record(u *unstructured.Unstructured, warning bool, reason, action, note string) {
	typ := corev1.EventTypeNormal
	if warning {
		typ = corev1.EventTypeWarning
	}
	op.events.Eventf(u, nil, typ, reason, action, "%s", truncateNote(note))
}

// recordApplied records that generation gen of u is running.
func (op *Operator) recordApplied(u *unstructured.Unstructured, gen int64, res config.Result) {
	op.record(u, false, EventApplied, ActionApply, fmt.Sprintf("generation %d %s", gen, res))
}

// recordRejected records why generation gen of u was refused: every field
// error as `edgeport apply` prints them.
func (op *Operator) recordRejected(u *unstructured.Unstructured, gen int64, reason, msg string) {
	op.record(u, true, reason, ActionApply, fmt.Sprintf("generation %d rejected: %s", gen, msg))
}

// recordReady records a change of the Ready condition the running
// resource reports: True is Normal, False a Warning with the condition's
// reason. Unknown (starting) is not of note.
func (op *Operator) recordReady(u *unstructured.Unstructured, c config.Condition) {
	switch c.Status {
	case config.ConditionTrue:
		note := "ready"
		if c.Message != "" {
			note += ": " + c.Message
		}
		op.record(u, false, EventReady, ActionObserve, note)
	case config.ConditionFalse:
		reason := c.Reason
		if reason == "" {
			reason = "NotReady"
		}
		note := "not ready"
		if c.Message != "" {
			note += ": " + c.Message
		}
		op.record(u, true, reason, ActionObserve, note)
	}
}

func truncateNote(s string) string {
	if len(s) <= maxEventNote {
		return s
	}
	s = s[:maxEventNote]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "..."
}
