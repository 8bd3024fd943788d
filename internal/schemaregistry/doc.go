// Package schemaregistry serves Azure IoT Operations' schema registry API
// over MQTT 5 request/response, backed by the Schema resources of the registry.
package schemaregistry
