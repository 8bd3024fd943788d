package opcua

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// The OPC UA connector's own families; the shared ones (connected,
// reconnects, errors by kind, samples, messages, publish latency) come from
// the connector runtime. They are read from the sessions at scrape time, so
// the data path touches no Prometheus counter.
var (
	descWatchdog = prometheus.NewDesc("edgeport_opcua_watchdog_rebuilds_total",
		"Sessions the watchdog rebuilt because no publish response arrived within N keep-alive intervals (since the endpoint's configuration was last applied).",
		[]string{"device", "endpoint"}, nil)
	descSessionFailures = prometheus.NewDesc("edgeport_opcua_session_failures_total",
		"Session attempts or sessions that failed (connect errors, lost connections, watchdog), since the configuration was last applied.",
		[]string{"device", "endpoint"}, nil)
	descItems = prometheus.NewDesc("edgeport_opcua_monitored_items",
		"Monitored items of a device endpoint, by state: accepted by the server or refused (bad node id, unsupported filter).",
		[]string{"device", "endpoint", "state"}, nil)
	descEvents = prometheus.NewDesc("edgeport_opcua_events_total",
		"OPC UA events received (since the configuration was last applied).",
		[]string{"device", "endpoint"}, nil)
	descTrust = prometheus.NewDesc("edgeport_opcua_certificates",
		"Certificates in the OPC UA trust list, by list (trusted, issuers, rejected): a rejected one waits for `edgeport connector opcua certs trust`.",
		[]string{"list"}, nil)
)

// Describe implements prometheus.Collector.
func (c *Connector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descWatchdog, descSessionFailures, descItems, descEvents, descTrust} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Connector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	type entry struct {
		dev, ep string
		s       *Session
	}
	var es []entry
	for k, s := range c.sessions {
		dev, ep, _ := strings.Cut(k, "/")
		es = append(es, entry{dev, ep, s})
	}
	c.mu.Unlock()
	for _, e := range es {
		n := e.s.Counters()
		ch <- prometheus.MustNewConstMetric(descWatchdog, prometheus.CounterValue, float64(n.WatchdogFires), e.dev, e.ep)
		ch <- prometheus.MustNewConstMetric(descSessionFailures, prometheus.CounterValue, float64(n.Reconnects), e.dev, e.ep)
		ch <- prometheus.MustNewConstMetric(descEvents, prometheus.CounterValue, float64(n.Events), e.dev, e.ep)
		ch <- prometheus.MustNewConstMetric(descItems, prometheus.GaugeValue, float64(n.Items), e.dev, e.ep, "accepted")
		ch <- prometheus.MustNewConstMetric(descItems, prometheus.GaugeValue, float64(n.ItemsRefused), e.dev, e.ep, "refused")
	}
	if list, err := c.dialer.Trust.List(); err == nil {
		counts := map[string]int{listTrusted: 0, listIssuers: 0, listRejected: 0}
		for _, e := range list {
			counts[e.List]++
		}
		for l, n := range counts {
			ch <- prometheus.MustNewConstMetric(descTrust, prometheus.GaugeValue, float64(n), l)
		}
	}
}
