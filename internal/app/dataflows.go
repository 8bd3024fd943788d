package app

import (
	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/dataflow"
)

// syncFlows gives the dataflow engine the current flows with the endpoints
// and profiles they refer to; it starts, restarts and stops flows on its
// own goroutines.
func (r *resources) syncFlows() {
	all := config.Selector{}
	r.a.flows.Sync(dataflow.ResolveAll(
		r.store.List("Dataflow", all),
		r.store.List("DataflowEndpoint", all),
		r.store.List("DataflowProfile", all),
		r.store.List("Schema", all),
		r.store.List("Asset", all)...,
	))
	// Endpoints and profiles are ready when they are valid; whether they
	// work shows in the flows that use them.
	for _, kind := range []string{"DataflowEndpoint", "DataflowProfile"} {
		for _, o := range r.store.List(kind, all) {
			if c := o.Status.Condition(config.ConditionReady); c == nil || o.Status.ObservedGeneration != o.Metadata.Generation {
				r.setReady(o, true, "Accepted", "used by the dataflows that refer to it")
			}
		}
	}
}

// reportFlow records a flow's state in its status.
func (r *resources) reportFlow(obj *config.Object, ready bool, reason, msg string, st config.DataflowStatus) {
	r.setStatus(obj, config.Status{Dataflow: &st}, ready, reason, msg)
}
