// Package opcua is Edgeport's OPC UA client side: sessions to OPC UA servers
// (gopcua) with an application-instance certificate, a trust list a person acts
// on, subscriptions that are watched until data really flows, browse and
// method calls. The connector runtime turns what it delivers into MQTT.
package opcua
