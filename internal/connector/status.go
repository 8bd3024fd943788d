package connector

import (
	"fmt"
	"strings"

	"github.com/edgeport/edgeport/internal/config"
)

// writeStatus writes every Device's and Asset's status from what the
// drivers reported. SetStatus does not notify watchers, so writing
// periodically costs no reconciliation.
func (m *Manager) writeStatus() {
	devices := m.store.List("Device", config.Selector{})
	assets := m.store.List("Asset", config.Selector{})
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, dev := range devices {
		spec := dev.Spec.(*config.DeviceSpec)
		st := config.Status{Endpoints: map[string]config.EndpointStatus{}}
		var down []string
		for name := range spec.Endpoints.Inbound {
			es := config.EndpointStatus{State: StateConnecting}
			if s := m.epStats[epKey(dev.Metadata.Name, name)]; s != nil {
				es = s.status()
			}
			st.Endpoints[name] = es
			if !es.Connected {
				msg := name + " " + strings.ToLower(es.State)
				if es.LastError != "" {
					msg += ": " + es.LastError
				}
				down = append(down, msg)
			}
		}
		ready, reason, msg := config.ConditionTrue, "Connected", "every endpoint is connected"
		switch {
		case !spec.IsEnabled():
			ready, reason, msg = config.ConditionFalse, "Disabled", "the device is disabled"
		case len(down) > 0:
			ready, reason, msg = config.ConditionFalse, "NotConnected", strings.Join(sortStrings(down), "; ")
		}
		st.Conditions = []config.Condition{{Type: config.ConditionReady, Status: ready, Reason: reason, Message: msg}}
		m.store.SetStatus(dev.Key(), dev.Metadata.UID, dev.Metadata.Generation, st)
	}
	for _, a := range assets {
		spec := a.Spec.(*config.AssetSpec)
		var st config.Status
		for _, ds := range spec.Datasets {
			if s := m.dsStats[a.Metadata.Name+"/"+ds.Name]; s != nil {
				st.Datasets = append(st.Datasets, s.status())
			}
		}
		for _, g := range spec.EventGroups {
			for _, e := range g.Events {
				if s := m.dsStats[a.Metadata.Name+"/"+g.Name+"/"+e.Name]; s != nil {
					st.Events = append(st.Events, s.status())
				}
			}
		}
		ready, reason, msg := config.ConditionTrue, "Running", "every data point is read"
		ref := spec.DeviceRef
		if p, bad := m.problems[a.Metadata.Name]; bad {
			reason, msg, _ = strings.Cut(p, ": ")
			ready = config.ConditionFalse
		} else if es := m.epStats[epKey(ref.DeviceName, ref.EndpointName)]; es == nil || es.status().State != StateConnected {
			state := StateConnecting
			if es != nil {
				state = es.status().State
			}
			ready, reason, msg = config.ConditionFalse, "DeviceNotConnected",
				fmt.Sprintf("device %s endpoint %s is %s", ref.DeviceName, ref.EndpointName, strings.ToLower(state))
		} else if bad := failing(st.Datasets, st.Events); len(bad) > 0 {
			ready, reason, msg = config.ConditionFalse, "DataPointErrors", strings.Join(bad, "; ")
		}
		st.Conditions = []config.Condition{{Type: config.ConditionReady, Status: ready, Reason: reason, Message: msg}}
		m.store.SetStatus(a.Key(), a.Metadata.UID, a.Metadata.Generation, st)
	}
}

// failing lists the datasets and points with errors, at most a few.
func failing(lists ...[]config.DatasetStatus) []string {
	var out []string
	for _, l := range lists {
		for _, ds := range l {
			if ds.Error != "" {
				out = append(out, ds.Name+": "+ds.Error)
			}
			for _, p := range ds.DataPoints {
				if p.Error != "" {
					out = append(out, ds.Name+"."+p.Name+": "+p.Error)
				}
			}
		}
	}
	if len(out) > 5 {
		out = append(out[:5], fmt.Sprintf("and %d more", len(out)-5))
	}
	return out
}

func sortStrings(s []string) []string {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s
}
