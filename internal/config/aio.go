package config

import (
	"slices"

	"go.yaml.in/yaml/v3"
)

// aioAPIVersions are the apiVersions of Azure IoT Operations' MQTT broker
// resources. A Broker, BrokerListener, BrokerAuthentication or
// BrokerAuthorization written for Azure IoT Operations is accepted as it
// is, so that a user migrating applies the same YAML.
var aioAPIVersions = []string{
	"mqttbroker.iotoperations.azure.com/v1",
	"mqttbroker.iotoperations.azure.com/v1beta1",
}

// aioKinds are the kinds that exist in both, with the same field names.
var aioKinds = []string{"Broker", "BrokerListener", "BrokerAuthentication", "BrokerAuthorization"}

// foreignAPIVersion reports whether apiVersion is Azure IoT Operations'
// for a kind Edgeport reads in that shape.
func foreignAPIVersion(kind, apiVersion string) bool {
	return slices.Contains(aioAPIVersions, apiVersion) && slices.Contains(aioKinds, kind)
}

// peek returns the scalar value of key k of mapping m, or "".
func peek(m *yaml.Node, k string) string {
	if m == nil || m.Kind != yaml.MappingNode {
		return ""
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == k && m.Content[i+1].Kind == yaml.ScalarNode {
			return m.Content[i+1].Value
		}
	}
	return ""
}
