package dataflow

import (
	"slices"
	"strings"
	"testing"

	"github.com/edgeport/edgeport/internal/config"
)

func assetObj(t *testing.T, name string, spec *config.AssetSpec) *config.Object {
	t.Helper()
	return &config.Object{APIVersion: config.APIVersion, Kind: "Asset", Metadata: config.Metadata{Name: name}, Spec: spec}
}

// An assetRef source subscribes to the topics of the asset's datasets
// (their own destinations, else the asset's defaults), besides its
// dataSources; a missing asset, or one that publishes nothing to MQTT,
// keeps the flow from running with a clear reason.
func TestResolveAssetRef(t *testing.T) {
	mqtt := func(topic string) []config.Destination {
		return []config.Destination{{Target: config.TargetMqtt, Configuration: config.DestinationConfiguration{Topic: topic}}}
	}
	assets := []*config.Object{
		assetObj(t, "line1", &config.AssetSpec{
			DefaultDatasetsDestinations: mqtt("plant/line1/default"),
			Datasets: []config.Dataset{
				{Name: "a", Destinations: mqtt("plant/line1/a")},
				{Name: "b"},
				{Name: "c", Destinations: []config.Destination{{Target: "BrokerStateStore", Configuration: config.DestinationConfiguration{Key: "k"}}}},
			},
		}),
		assetObj(t, "store-only", &config.AssetSpec{Datasets: []config.Dataset{
			{Name: "c", Destinations: []config.Destination{{Target: "BrokerStateStore", Configuration: config.DestinationConfiguration{Key: "k"}}}},
		}}),
	}
	flow := func(name, asset string, extra ...string) *config.Object {
		return mustCheck(t, "Dataflow", name, &config.DataflowSpec{Operations: []config.DataflowOperation{
			{OperationType: "Source", SourceSettings: &config.DataflowSource{EndpointRef: "default", AssetRef: asset, DataSources: extra}},
			{OperationType: "Destination", DestinationSettings: &config.DataflowDestination{EndpointRef: "default", DataDestination: "out"}},
		}})
	}
	plans := ResolveAll([]*config.Object{
		flow("ok", "line1", "extra/#"), flow("missing", "nope"), flow("nomqtt", "store-only"),
	}, nil, nil, nil, assets...)
	if p := plans[0]; p.Err != nil || !slices.Equal(p.SourceFilters(), []string{"extra/#", "plant/line1/a", "plant/line1/default"}) {
		t.Errorf("ok: %v %v", p.Err, p.SourceFilters())
	}
	if err := plans[1].Err; err == nil || !strings.Contains(err.Error(), `source assetRef "nope": no such Asset`) {
		t.Errorf("missing: %v", err)
	}
	if err := plans[2].Err; err == nil || !strings.Contains(err.Error(), "publishes no dataset to an MQTT topic") {
		t.Errorf("nomqtt: %v", err)
	}
	// A changed asset changes the plan's key, so the flow restarts on it.
	assets[0].Spec.(*config.AssetSpec).Datasets[0].Destinations = mqtt("plant/line1/a2")
	again := ResolveAll([]*config.Object{flow("ok", "line1", "extra/#")}, nil, nil, nil, assets...)
	if again[0].key == plans[0].key {
		t.Error("the plan did not change with the asset's topics")
	}
}
