// Package statestore serves the Azure IoT Operations state store protocol: a
// durable key-value store spoken as MQTT 5 request/response through the broker.
package statestore

// Protocol constants, from the Azure IoT Operations state store protocol
// reference (learn.microsoft.com, azure/iot-operations, "State store
// protocol") and the Azure IoT Operations SDKs (github.com/Azure/iot-operations-sdks).
const (
	// InvokeTopic is where clients publish requests.
	InvokeTopic = "statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/command/invoke"
	// notifyTopicPrefix starts every notification topic:
	// {prefix}{HEX(clientID)}/command/notify/{HEX(key)}. Response topics
	// beginning with it (or equal to InvokeTopic) are refused, so that no
	// request can make the state store publish a forged notification or a
	// request to itself.
	notifyTopicPrefix = "clients/statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/"

	// Bucket is the store.Store KV bucket that holds the keys.
	Bucket = "statestore"

	// protocolVersion is the RPC protocol version of our responses; requests
	// of another major version are answered with 505.
	protocolVersion        = "1.0"
	supportedMajorVersions = "1"
)

// User property names of the SDKs' RPC conventions (doc/reference/message-metadata.md).
const (
	propTimestamp        = "__ts"
	propFencingToken     = "__ft"
	propInvokerClientID  = "__invId" // protocol 1.x
	propSourceID         = "__srcId" // later protocol versions
	propProtocolVersion  = "__protVer"
	propStatus           = "__stat"
	propStatusMessage    = "__stMsg"
	propApplicationError = "__apErr"
	propInvalidName      = "__propName"
	propInvalidValue     = "__propVal"
	propSupportedMajor   = "__supProtMajVer"
	propRequestVersion   = "__requestProtVer"
)

// Error strings of "-ERR" responses, as documented and as the SDKs match
// them. The reference page spells the fencing one "lower version that the";
// every SDK (Go, .NET, Rust) expects "than", which is what the service sends.
const (
	errTimestampSkew      = "the request timestamp is too far in the future; ensure that the client and broker system clocks are synchronized"
	errFencingRequired    = "a fencing token is required for this request"
	errFencingSkew        = "the request fencing token timestamp is too far in the future; ensure that the client and broker system clocks are synchronized"
	errFencingLower       = "the request fencing token is a lower version than the fencing token protecting the resource"
	errQuotaExceeded      = "the quota has been exceeded"
	errSyntaxError        = "syntax error"
	errNotAuthorized      = "not authorized"
	errUnknownCommand     = "unknown command"
	errWrongArgs          = "wrong number of arguments"
	errMissingTimestamp   = "missing timestamp"
	errMalformedTimestamp = "malformed timestamp"
	errKeyLengthZero      = "the key length is zero"
)

// KeysCommand is Edgeport's own extension for enumerating keys, which the
// documented protocol lacks: KEYS-style listing with cursor paging.
//
//	EDGEPORT.KEYS {prefix} {cursor} {count}
//
// lists up to count keys that begin with prefix and sort (bytewise) after
// cursor ("" for the first page). The answer is an array whose first element
// is the cursor for the next page (null when there is none) followed by the
// keys. Keys the requester may not read are left out.
const KeysCommand = "EDGEPORT.KEYS"
