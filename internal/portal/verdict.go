package portal

import (
	"fmt"
	"slices"
	"strings"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/telemetry"
)

// Verdict levels, worst last.
const (
	Healthy  = "healthy"
	Degraded = "degraded"
	Failing  = "failing"
)

// Reason is one thing the overview's verdict found.
type Reason struct {
	Level   string `json:"level"` // degraded or failing
	Subject string `json:"subject"`
	Message string `json:"message"`
}

// Verdict is the overview's health judgement.
type Verdict struct {
	Level   string   `json:"level"`
	Reasons []Reason `json:"reasons"`
}

// Thresholds of the verdict (the same as edgeport check's).
const (
	freeWarn       = 0.10
	freeFail       = 0.02
	quotaWarn      = 0.90
	selfTestSlowMs = 50
)

// judge turns the status, the store's use and the resources into a
// verdict with reasons.
func judge(st telemetry.Status, used, quota int64, objs []*config.Object) Verdict {
	v := Verdict{Level: Healthy, Reasons: []Reason{}}
	add := func(level, subject, format string, args ...any) {
		v.Reasons = append(v.Reasons, Reason{Level: level, Subject: subject, Message: fmt.Sprintf(format, args...)})
		if level == Failing || v.Level == Healthy {
			v.Level = level
		}
	}
	if !st.Broker.Accepting {
		add(Failing, "broker", "shutting down: not accepting connections")
	}
	for _, l := range st.Listeners {
		switch {
		case l.Address == "" && l.Error != "":
			add(Failing, "listener "+l.Name, "not bound on %s: %s", l.Configured, l.Error)
		case l.Address == "":
			add(Degraded, "listener "+l.Name, "not bound yet (%s)", l.Configured)
		case l.Admits == "nobody":
			add(Degraded, "listener "+l.Name, "refuses every client: no authentication attached and anonymous access off")
		}
	}
	if s := st.Storage; s != nil {
		switch {
		case !s.Writable:
			add(Failing, "storage", "%s is not writable: %s", s.Path, s.Error)
		case s.TotalBytes > 0:
			free := float64(s.FreeBytes) / float64(s.TotalBytes)
			if free < freeFail {
				add(Failing, "storage", "%.1f%% free on the data directory's file system", free*100)
			} else if free < freeWarn {
				add(Degraded, "storage", "%.1f%% free on the data directory's file system", free*100)
			}
		}
	}
	if quota > 0 {
		ratio := float64(used) / float64(quota)
		if ratio >= 1 {
			add(Failing, "storage quota", "store uses %d B of its %d B quota: QoS 1/2 publishes are refused (0x97)", used, quota)
		} else if ratio >= quotaWarn {
			add(Degraded, "storage quota", "store uses %.0f%% of its quota", ratio*100)
		}
	}
	if p := st.SelfTest; p != nil {
		switch {
		case p.ConsecutiveFailures > 0:
			add(Failing, "self-test", "failing for %d round(s): %s", p.ConsecutiveFailures, p.LastError)
		case p.Runs > 0 && p.LastLatencySeconds*1000 > selfTestSlowMs:
			add(Degraded, "self-test", "publish-to-delivery latency %.1f ms (above %d ms)", p.LastLatencySeconds*1000, selfTestSlowMs)
		}
	}
	var notReady []string
	for _, o := range objs {
		if ok, why := ready(o); !ok {
			notReady = append(notReady, o.Kind+"/"+o.Metadata.Name+": "+why)
		}
	}
	slices.Sort(notReady)
	if len(notReady) > 0 {
		shown := notReady[:min(len(notReady), 5)]
		more := ""
		if len(notReady) > len(shown) {
			more = fmt.Sprintf(" (and %d more)", len(notReady)-len(shown))
		}
		add(Degraded, "resources", "%d not Ready: %s%s", len(notReady), strings.Join(shown, "; "), more)
	}
	return v
}

// ready reads an object's Ready condition; an object without one yet is
// not judged.
func ready(o *config.Object) (bool, string) {
	if o.Status == nil {
		return true, ""
	}
	for _, c := range o.Status.Conditions {
		if c.Type == "Ready" {
			if c.Status == "True" {
				return true, ""
			}
			return false, c.Reason + ": " + c.Message
		}
	}
	return true, ""
}
