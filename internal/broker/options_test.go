package broker

import (
	"strings"
	"testing"
	"time"
)

// TestOptionsZeroAndUnlimited: the one rule of Options. Zero is the
// default for every field; Unlimited is accepted exactly where the Bound
// says the limit can be lifted; out-of-range values are refused naming
// the Broker resource's field.
func TestOptionsZeroAndUnlimited(t *testing.T) {
	if err := (Options{}).Validate(); err != nil {
		t.Fatalf("zero Options: %v", err)
	}
	o := Options{}.withDefaults()
	if o.MaxPacketSize != DefaultMaxPacketSize || o.MaxQueuedBytes != Unlimited || o.MaxMessageExpiry != Unlimited || o.MaxTopicLength != Unlimited {
		t.Fatalf("defaults %+v", o)
	}
	lifted := Options{MaxQueuedBytes: Unlimited, TopicAliasMaximum: Unlimited, MaxMessageExpiry: -time.Second,
		SysInterval: -time.Second, MaxTopicLength: Unlimited, MaxTopicLevels: Unlimited, MaxSubscriptionsPerClient: Unlimited,
		MaxQueuedMessages: Unlimited}
	if err := lifted.Validate(); err != nil {
		t.Fatalf("lifted limits refused: %v", err)
	}
	for _, tc := range []struct {
		o     Options
		field string
	}{
		{Options{MaxPacketSize: Unlimited}, "advanced.clients.maxPacketSizeBytes"},
		{Options{MaxPacketSize: 15}, "advanced.clients.maxPacketSizeBytes"},
		{Options{MaxInflight: 65536}, "advanced.clients.maxInflight"},
		{Options{ReceiveMaximum: Unlimited}, "advanced.clients.maxReceiveMaximum"},
		{Options{MaxOutboundBytes: 100}, "advanced.clients.maxOutboundBytes"},
		{Options{MaxKeepAlive: -time.Second}, "advanced.clients.maxKeepAliveSeconds"},
		{Options{MaxKeepAlive: 65536 * time.Second}, "advanced.clients.maxKeepAliveSeconds"},
		{Options{ConnectTimeout: -1}, "advanced.clients.connectTimeoutSeconds"},
		{Options{SysInterval: 86401 * time.Second}, "diagnostics.sysIntervalSeconds"},
	} {
		err := tc.o.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), tc.field+": ") {
			t.Errorf("%+v: error %v, want one naming %s", tc.o, err, tc.field)
		}
	}
	// What users write: 0 lifts a liftable limit, and is out of range for
	// the others.
	if BoundMaxQueuedBytes.FromUser(0) != Unlimited || BoundMaxInflight.FromUser(0) != 0 || BoundMaxInflight.Check(0) == nil {
		t.Fatal("FromUser/Check do not follow the rule")
	}
}
