// Package config defines Edgeport's Kubernetes-shaped resources: their types,
// defaults, validation, loading from files and the registry they live in.
package config

import (
	"time"
)

// APIVersion is the apiVersion of every Edgeport resource.
const APIVersion = "edgeport.io/v1"

// AnnotationConfigFile names the file of the config directory that defines a
// resource. The server sets it; it is not taken from input.
const AnnotationConfigFile = "edgeport.io/config-file"

// Object is one resource: a kind's spec with the common envelope.
type Object struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Metadata   Metadata `json:"metadata"`
	// Spec is a pointer to the kind's spec type (e.g. *BrokerListenerSpec).
	Spec   any     `json:"spec"`
	Status *Status `json:"status,omitempty"`
}

// Metadata is the common part of every resource. Name, labels and
// annotations come from the user; the rest is set by the server.
type Metadata struct {
	Name string `json:"name"`
	// Namespace is accepted so that Kubernetes and Azure IoT Operations
	// manifests apply as they are; one machine has one namespace, so it
	// is not kept.
	Namespace         string            `json:"namespace,omitempty"`
	Labels            map[string]string `json:"labels,omitempty"`
	Annotations       map[string]string `json:"annotations,omitempty"`
	UID               string            `json:"uid,omitempty"`
	Generation        int64             `json:"generation,omitempty"`
	CreationTimestamp *time.Time        `json:"creationTimestamp,omitempty"`
}

// Key identifies a resource.
type Key struct {
	Kind, Name string
}

func (k Key) String() string { return k.Kind + "/" + k.Name }

// Key returns the object's key.
func (o *Object) Key() Key { return Key{o.Kind, o.Metadata.Name} }

// Condition status values.
const (
	ConditionTrue    = "True"
	ConditionFalse   = "False"
	ConditionUnknown = "Unknown"
)

// ConditionReady is the condition every resource reports.
const ConditionReady = "Ready"

// Status is what the running system reports about a resource.
type Status struct {
	// ObservedGeneration is the generation the conditions describe; when it
	// is below metadata.generation the latest change is not applied yet.
	ObservedGeneration int64       `json:"observedGeneration"`
	Conditions         []Condition `json:"conditions,omitempty"`
	// Ports is set for BrokerListener: what each port is bound to.
	Ports []PortStatus `json:"ports,omitempty"`
	// Endpoints is set for Device: each inbound endpoint as its connector
	// sees it.
	Endpoints map[string]EndpointStatus `json:"endpoints,omitempty"`
	// Datasets and Events are set for Asset: what each dataset (and event,
	// named group/event) delivered.
	Datasets []DatasetStatus `json:"datasets,omitempty"`
	Events   []DatasetStatus `json:"events,omitempty"`
	// Dataflow is set for Dataflow: counters, buffer fill and last error.
	Dataflow *DataflowStatus `json:"dataflow,omitempty"`
	// Versions is set for Schema: each stored version and its content hash.
	Versions []SchemaVersionStatus `json:"versions,omitempty"`
	// UsedBy is set for Schema: the dataflows and asset datasets that name
	// it, with the topics their messages travel on.
	UsedBy []SchemaUse `json:"usedBy,omitempty"`
}

// EndpointStatus is one device endpoint as its connector runs it.
type EndpointStatus struct {
	Connected bool `json:"connected"`
	// State is Connecting, Connected, Degraded, Disabled or Error.
	State          string     `json:"state"`
	ConnectedSince *time.Time `json:"connectedSince,omitempty"`
	LastError      string     `json:"lastError,omitempty"`
	LastErrorTime  *time.Time `json:"lastErrorTime,omitempty"`
	Reconnects     uint64     `json:"reconnects,omitempty"`
}

// DatasetStatus is what one dataset or event delivered.
type DatasetStatus struct {
	Name          string     `json:"name"`
	LastValueTime *time.Time `json:"lastValueTime,omitempty"`
	Samples       uint64     `json:"samples"`
	Messages      uint64     `json:"messages"`
	Dropped       uint64     `json:"dropped,omitempty"`
	Error         string     `json:"error,omitempty"`
	// Topic is the MQTT topic the dataset publishes on; SchemaRef the
	// schema its connector registered for those messages
	// (aio-sr://<name>:<version>).
	Topic     string `json:"topic,omitempty"`
	SchemaRef string `json:"schemaRef,omitempty"`
	// DataPoints has an entry per configured data point, in order.
	DataPoints []DataPointStatus `json:"dataPoints,omitempty"`
}

// DataPointStatus is one data point as last read.
type DataPointStatus struct {
	Name          string     `json:"name"`
	LastValueTime *time.Time `json:"lastValueTime,omitempty"`
	Samples       uint64     `json:"samples"`
	Error         string     `json:"error,omitempty"`
}

// Condition is one aspect of a resource's state.
type Condition struct {
	Type               string    `json:"type"`
	Status             string    `json:"status"`
	Reason             string    `json:"reason"`
	Message            string    `json:"message,omitempty"`
	LastTransitionTime time.Time `json:"lastTransitionTime"`
}

// PortStatus is one BrokerListener port as it runs.
type PortStatus struct {
	Port     int    `json:"port"`
	Protocol string `json:"protocol"`
	Address  string `json:"address,omitempty"` // bound address; empty when not listening
	Ready    bool   `json:"ready"`
	Message  string `json:"message,omitempty"`
}

// Condition returns the condition of type t, or nil.
func (s *Status) Condition(t string) *Condition {
	if s == nil {
		return nil
	}
	for i := range s.Conditions {
		if s.Conditions[i].Type == t {
			return &s.Conditions[i]
		}
	}
	return nil
}

// Ready returns the Ready condition, or an Unknown one when there is none.
func (o *Object) Ready() Condition {
	if c := o.Status.Condition(ConditionReady); c != nil {
		return *c
	}
	return Condition{Type: ConditionReady, Status: ConditionUnknown, Reason: "Pending"}
}

// Event types.
const (
	EventNormal  = "Normal"
	EventWarning = "Warning"
)

// Event is something that happened to a resource, kept in memory for
// describe and troubleshooting.
type Event struct {
	Type           string    `json:"type"`
	Reason         string    `json:"reason"`
	Message        string    `json:"message"`
	Count          int       `json:"count"`
	FirstTimestamp time.Time `json:"firstTimestamp"`
	LastTimestamp  time.Time `json:"lastTimestamp"`
}
