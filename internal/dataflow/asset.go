package dataflow

import (
	"fmt"

	"github.com/edgeport/edgeport/internal/config"
)

// assetTopics returns the MQTT topics an Asset's datasets are published
// to (each dataset's destinations, or the asset's default ones), in
// dataset order: what a flow whose source names the asset consumes, as
// Azure IoT Operations' assetRef source does.
func assetTopics(name string, assets []*config.Object) ([]string, error) {
	var spec *config.AssetSpec
	for _, o := range assets {
		if o.Metadata.Name == name {
			spec = o.Spec.(*config.AssetSpec)
			break
		}
	}
	if spec == nil {
		return nil, fmt.Errorf("source assetRef %q: no such Asset", name)
	}
	var topics []string
	seen := map[string]bool{}
	for i := range spec.Datasets {
		for _, d := range spec.DatasetDestinations(i) {
			if d.Target == config.TargetMqtt && d.Configuration.Topic != "" && !seen[d.Configuration.Topic] {
				seen[d.Configuration.Topic] = true
				topics = append(topics, d.Configuration.Topic)
			}
		}
	}
	if len(topics) == 0 {
		return nil, fmt.Errorf("source assetRef %q: the asset publishes no dataset to an MQTT topic", name)
	}
	return topics, nil
}
