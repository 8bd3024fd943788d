package jsstate

import (
	"encoding/base64"
	"fmt"
)

// clientKey is the key of a client's session in the buckets: NATS keys
// allow only [-/_=.a-zA-Z0-9], and an MQTT client identifier may hold any
// character, so it is base64url (no padding), which is reversible and
// never contains a dot (NATS's token separator).
func clientKey(clientID string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(clientID))
}

// clientID decodes a key made by clientKey.
func clientID(key string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(key)
	if err != nil {
		return "", fmt.Errorf("decoding session key %q: %w", key, err)
	}
	return string(b), nil
}
