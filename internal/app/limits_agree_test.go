package app

import (
	"fmt"
	"strings"
	"testing"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/config"
)

// brokerDoc is a Broker resource setting one field (a broker.Bound's
// dotted path under spec) to v, or none when field is "".
func brokerDoc(field string, v int64) string {
	var b strings.Builder
	b.WriteString("apiVersion: edgeport.io/v1\nkind: Broker\nmetadata:\n  name: default\nspec:")
	if field == "" {
		b.WriteString(" {}\n")
		return b.String()
	}
	b.WriteString("\n")
	parts := strings.Split(field, ".")
	for i, p := range parts {
		b.WriteString(strings.Repeat("  ", i+1) + p + ":")
		if i == len(parts)-1 {
			fmt.Fprintf(&b, " %d", v)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func decodeBroker(t *testing.T, doc string) (*config.BrokerSpec, error) {
	t.Helper()
	o, err := config.Builtin().Decode([]byte(doc))
	if err != nil {
		return nil, err
	}
	return o.Spec.(*config.BrokerSpec), nil
}

// TestBrokerDefaultsAgree: a Broker resource that sets nothing gives the
// broker exactly its own defaults, so the resource, the serve flags and
// broker.Options share one set of defaults.
func TestBrokerDefaultsAgree(t *testing.T) {
	spec, err := decodeBroker(t, brokerDoc("", 0))
	if err != nil {
		t.Fatal(err)
	}
	b, err := broker.New(broker.Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := b.Options()
	got := brokerOptions(spec, broker.Options{})
	if err := got.Validate(); err != nil {
		t.Fatalf("defaulted resource gives invalid options: %v", err)
	}
	b2, err := broker.New(got, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Compare what the broker puts in force: unset limits the broker
	// defaults to "no limit" and the resource's lifted ones both mean none.
	if g, w := fmt.Sprintf("%+v", b2.Options()), fmt.Sprintf("%+v", want); g != w {
		t.Fatalf("resource defaults\n%s\nbroker defaults\n%s", g, w)
	}
}

// TestBrokerBoundsAgree: for every limit in broker.Bounds, the Broker
// resource accepts exactly the values the bound allows (0 only where it
// lifts the limit), and what it accepts maps onto options the broker
// accepts, with 0 turned into the broker's Unlimited.
func TestBrokerBoundsAgree(t *testing.T) {
	for _, bd := range broker.Bounds() {
		cases := map[int64]bool{bd.Min: true, bd.Max: true, bd.Max + 1: false, 0: bd.Liftable()}
		if bd.Min > 1 {
			cases[bd.Min-1] = false
		}
		if bd.Default != 0 {
			cases[bd.Default] = true
		}
		for v, ok := range cases {
			spec, err := decodeBroker(t, brokerDoc(bd.Field, v))
			if (err == nil) != ok {
				t.Errorf("spec.%s: %d: resource error %v, want accepted=%v", bd.Field, v, err, ok)
				continue
			}
			if (bd.Check(v) == nil) != ok {
				t.Errorf("spec.%s: %d: Bound.Check disagrees (want accepted=%v)", bd.Field, v, ok)
			}
			if !ok {
				if !strings.Contains(err.Error(), "spec."+bd.Field+": ") {
					t.Errorf("spec.%s: %d: error does not name the field: %v", bd.Field, v, err)
				}
				continue
			}
			o := brokerOptions(spec, broker.Options{})
			if err := o.Validate(); err != nil {
				t.Errorf("spec.%s: %d: accepted by the resource, refused by the broker: %v", bd.Field, v, err)
			}
		}
	}
	// 0 lifts: the broker gets Unlimited, not its default.
	spec, err := decodeBroker(t, brokerDoc("advanced.clients.topicAliasMaximum", 0))
	if err != nil {
		t.Fatal(err)
	}
	if o := brokerOptions(spec, broker.Options{}); o.TopicAliasMaximum != broker.Unlimited {
		t.Fatalf("topicAliasMaximum 0 maps to %d, want Unlimited (aliases off)", o.TopicAliasMaximum)
	}
}
