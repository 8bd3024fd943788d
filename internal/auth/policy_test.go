package auth

import (
	"fmt"
	"testing"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/config"
)

func TestTopicPattern(t *testing.T) {
	alice := &broker.Principal{ClientID: "dev1", Username: "alice", Attributes: map[string]string{"site": "berlin"}}
	for _, tc := range []struct {
		pattern, topic string
		name, filter   bool // allowed as a PUBLISH name, covering as a SUBSCRIBE filter
	}{
		{"a/b", "a/b", true, true},
		{"a/b", "a/c", false, false},
		{"a/b", "a/b/c", false, false},
		{"a/b/c", "a/b", false, false},
		{"a/+", "a/b", true, true},
		{"a/+", "a/", true, true},
		{"a/+", "a", false, false},
		{"a/+", "a/+", false, true},
		{"a/+", "a/#", false, false},
		{"a/#", "a", true, true},
		{"a/#", "a/b/c", true, true},
		{"a/#", "a/+/c", false, true},
		{"a/#", "a/#", false, true},
		{"a/#", "#", false, false},
		{"a/+/#", "a/#", false, false}, // a/# also matches a
		{"a/+/c", "a/+/c", false, true},
		{"a/+/c", "a/b/+", false, false},
		{"#", "anything/at/all", true, true},
		{"#", "#", false, true},
		{"#", "$SYS/x", false, false}, // a leading wildcard never matches $ topics
		{"+/x", "$SYS/x", false, false},
		{"$SYS/#", "$SYS/broker/uptime", true, true},
		{"$SYS/#", "$SYS/#", false, true},
		{"sensors/{principal.clientId}/t", "sensors/dev1/t", true, true},
		{"sensors/{principal.clientId}/t", "sensors/dev2/t", false, false},
		{"sensors/{principal.clientId}/t", "sensors/+/t", false, false},
		{"sensors/{principal.clientId}/t", "sensors/#", false, false},
		{"u/{principal.username}/#", "u/alice/x", true, true},
		{"u/{principal.username}/#", "u/alice", true, true},
		{"u/{principal.username}/#", "u/bob/x", false, false},
		{"site/{principal.attributes.site}", "site/berlin", true, true},
		{"site/{principal.attributes.line}", "site/", false, false}, // no such attribute: nothing
	} {
		tp, err := compileTopic(tc.pattern)
		if err != nil {
			t.Fatal(err)
		}
		// A filter is only ever checked as a filter (it has wildcards), a
		// name as both.
		isName := !containsWildcard(tc.topic)
		if isName {
			if got := tp.matchName(alice, tc.topic); got != tc.name {
				t.Errorf("publish %q under %q = %v, want %v", tc.topic, tc.pattern, got, tc.name)
			}
		}
		if got := tp.covers(alice, tc.topic); got != tc.filter {
			t.Errorf("subscribe %q under %q = %v, want %v", tc.topic, tc.pattern, got, tc.filter)
		}
	}
}

func containsWildcard(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '+' || s[i] == '#' {
			return true
		}
	}
	return false
}

// TestSubstitutionEscaping: values a client chooses (client ID, user name,
// attributes from a webhook) are never pattern syntax. Each case is an
// attempt to widen a rule; every one must fail.
func TestSubstitutionEscaping(t *testing.T) {
	for _, tc := range []struct {
		name     string
		clientID string
		pattern  string
		op       string // "pub", "sub" or "id" (a Connect clientIds glob)
		target   string
	}{
		{"client ID + as a level wildcard (publish)", "+", "d/{principal.clientId}/t", "pub", "d/other/t"},
		{"client ID + as a level wildcard (subscribe)", "+", "d/{principal.clientId}/t", "sub", "d/+/t"},
		{"client ID # as a multi-level wildcard", "#", "d/{principal.clientId}", "sub", "d/#"},
		{"client ID # reaching below", "#", "d/{principal.clientId}", "pub", "d/x/y"},
		{"client ID with / spanning levels", "x/y", "d/{principal.clientId}/t", "pub", "d/x/y/t"},
		{"client ID with / spanning levels (subscribe)", "x/y", "d/{principal.clientId}/t", "sub", "d/x/y/t"},
		{"client ID with / reaching a sibling", "a/../b", "d/{principal.clientId}", "pub", "d/b"},
		{"client ID * as a glob", "*", "{principal.clientId}", "id", "somebody-else"},
		{"client ID * inside a glob", "line*", "{principal.clientId}-x", "id", "line7-x"},
		{"client ID * against a topic", "*", "d/{principal.clientId}", "pub", "d/other"},
		{"client ID ? and [] as glob syntax", "a?[0-9]", "keys/{principal.clientId}", "key", "keys/ab7"},
		{"client ID * as a key glob", "*", "keys/{principal.clientId}", "key", "keys/secret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &broker.Principal{ClientID: tc.clientID, Username: "u"}
			var got, literal bool
			switch tc.op {
			case "pub", "sub":
				tp, err := compileTopic(tc.pattern)
				if err != nil {
					t.Fatal(err)
				}
				if tc.op == "pub" {
					got = tp.matchName(p, tc.target)
				} else {
					got = tp.covers(p, tc.target)
				}
			case "id", "key":
				g, err := compileGlob(tc.pattern, tc.op == "key", true)
				if err != nil {
					t.Fatal(err)
				}
				got = g.match(p, tc.target)
				// The value still matches itself, literally.
				self := p.ClientID
				if tc.op == "key" {
					self = "keys/" + p.ClientID
				} else if tc.pattern != "{principal.clientId}" {
					self = p.ClientID + "-x"
				}
				literal = g.match(p, self)
				if !literal {
					t.Errorf("the value %q does not match itself through %q", tc.clientID, tc.pattern)
				}
			}
			if got {
				t.Errorf("client ID %q widened %q to %q", tc.clientID, tc.pattern, tc.target)
			}
		})
	}
	// And the legitimate use still works.
	tp, _ := compileTopic("d/{principal.clientId}/t")
	if !tp.matchName(&broker.Principal{ClientID: "dev-1"}, "d/dev-1/t") {
		t.Error("d/{principal.clientId}/t does not allow dev-1 its own topic")
	}
}

func TestGlob(t *testing.T) {
	p := &broker.Principal{ClientID: "c1", Attributes: map[string]string{"building": "b22"}}
	for _, tc := range []struct {
		pattern string
		full    bool
		s       string
		want    bool
	}{
		{"*", false, "", true},
		{"*", false, "anything", true},
		{"dev-*", false, "dev-1", true},
		{"dev-*", false, "dev", false},
		{"*-x-*", false, "a-x-b", true},
		{"*-x-*", false, "a-y-b", false},
		{"a*b*c", false, "aXbYbZc", true},
		{"a*b*c", false, "aXbYbZ", false},
		{"{principal.attributes.building}*", false, "b22-sensor", true},
		{"{principal.attributes.building}*", false, "b23-sensor", false},
		{"{principal.attributes.floor}*", false, "b22", false},
		{"number[0-9]", true, "number7", true},
		{"number[0-9]", true, "numberx", false},
		{"char?", true, "charA", true},
		{"char?", true, "char", false},
		{"[!a]x", true, "bx", true},
		{"[!a]x", true, "ax", false},
		{`lit\*`, true, "lit*", true},
		{`lit\*`, true, "litX", false},
		{"?", false, "?", true}, // ? is literal outside key patterns
		{"?", false, "x", false},
	} {
		g, err := compileGlob(tc.pattern, tc.full, true)
		if err != nil {
			t.Fatalf("%q: %v", tc.pattern, err)
		}
		if got := g.match(p, tc.s); got != tc.want {
			t.Errorf("%q ~ %q = %v, want %v", tc.pattern, tc.s, got, tc.want)
		}
	}
	for _, bad := range []string{"{principal.nope}", "{unclosed", "[a", "x}"} {
		if _, err := compileGlob(bad, true, true); err == nil {
			t.Errorf("%q compiled", bad)
		}
	}
}

// matrixPolicy is the policy of the authorization matrix: the rules of
// Azure IoT Operations' documentation, plus per-client sandboxes.
const matrixPolicy = `
apiVersion: edgeport.io/v1
kind: BrokerAuthorization
metadata: {name: matrix}
spec:
  authorizationPolicies:
    rules:
    - principals:
        usernames: [temperature-sensor, humidity-sensor]
        attributes:
        - {city: seattle, organization: contoso}
      brokerResources:
      - method: Connect
      - method: Publish
        topics: ["/telemetry/{principal.username}", "/telemetry/{principal.attributes.organization}"]
      - method: Subscribe
        topics: ["/commands/{principal.attributes.organization}"]
    - principals:
        attributes:
        - {building: building22}
        - {building: building23}
      brokerResources:
      - method: Connect
        clientIds: ["{principal.attributes.building}*"]
      - method: Publish
        topics: ["sensors/{principal.attributes.building}/{principal.clientId}/telemetry"]
      stateStoreResources:
      - {method: Read, keyType: Pattern, keys: ["clients/{principal.clientId}/*", "shared/*"]}
      - {method: ReadWrite, keyType: Pattern, keys: ["clients/{principal.clientId}/rw/*"]}
      - {method: Write, keyType: String, keys: ["drop*box"]}
      - {method: ReadWrite, keyType: Binary, keys: ["AAEC"]}
    - principals:
        clientIds: ["ops-*"]
      brokerResources:
      - method: Connect
      - method: Subscribe
        topics: ["sensors/#", "$SYS/#"]
`

func matrix(t *testing.T) *Policy {
	t.Helper()
	obj, err := config.Builtin().Decode([]byte(matrixPolicy))
	if err != nil {
		t.Fatal(err)
	}
	pol, err := NewPolicy(obj.Spec.(*config.BrokerAuthorizationSpec))
	if err != nil {
		t.Fatal(err)
	}
	return pol
}

// TestAuthorizationMatrix checks principal × operation × topic against
// the rules above: allow, deny (default and explicit non-matches) and
// substitution.
func TestAuthorizationMatrix(t *testing.T) {
	pol := matrix(t)
	temp := &broker.Principal{ClientID: "t1", Username: "temperature-sensor"}
	contoso := &broker.Principal{ClientID: "c1", Username: "someone", Attributes: map[string]string{"city": "seattle", "organization": "contoso"}}
	halfAttrs := &broker.Principal{ClientID: "c2", Username: "x", Attributes: map[string]string{"organization": "contoso"}}
	b22 := &broker.Principal{ClientID: "building22-s1", Attributes: map[string]string{"building": "building22"}}
	b22wrongID := &broker.Principal{ClientID: "building23-s1", Attributes: map[string]string{"building": "building22"}}
	ops := &broker.Principal{ClientID: "ops-console"}
	anon := &broker.Principal{ClientID: "anon", Method: "anonymous"}
	evil := &broker.Principal{ClientID: "+", Username: "#", Attributes: map[string]string{"building": "building22"}}

	type row struct {
		who   string
		p     *broker.Principal
		op    broker.Op
		topic string
		want  bool
	}
	rows := []row{
		{"temp", temp, broker.OpConnect, "", true},
		{"temp", temp, broker.OpPublish, "/telemetry/temperature-sensor", true},
		{"temp", temp, broker.OpPublish, "/telemetry/humidity-sensor", false},
		{"temp", temp, broker.OpPublish, "/telemetry/contoso", false}, // no organization attribute
		{"temp", temp, broker.OpSubscribe, "/commands/contoso", false},
		{"contoso", contoso, broker.OpConnect, "", true},
		{"contoso", contoso, broker.OpPublish, "/telemetry/someone", true},
		{"contoso", contoso, broker.OpPublish, "/telemetry/contoso", true},
		{"contoso", contoso, broker.OpSubscribe, "/commands/contoso", true},
		{"contoso", contoso, broker.OpSubscribe, "/commands/+", false},
		{"contoso", contoso, broker.OpSubscribe, "/commands/#", false},
		{"half attributes", halfAttrs, broker.OpConnect, "", false},
		{"half attributes", halfAttrs, broker.OpPublish, "/telemetry/contoso", false},
		{"b22", b22, broker.OpConnect, "", true},
		{"b22", b22, broker.OpPublish, "sensors/building22/building22-s1/telemetry", true},
		{"b22", b22, broker.OpPublish, "sensors/building22/other/telemetry", false},
		{"b22", b22, broker.OpPublish, "sensors/building23/building22-s1/telemetry", false},
		{"b22", b22, broker.OpSubscribe, "sensors/#", false},
		{"b22 with another building's ID", b22wrongID, broker.OpConnect, "", false},
		{"ops", ops, broker.OpConnect, "", true},
		{"ops", ops, broker.OpSubscribe, "sensors/+/+/telemetry", true},
		{"ops", ops, broker.OpSubscribe, "sensors/#", true},
		{"ops", ops, broker.OpSubscribe, "#", false},
		{"ops", ops, broker.OpSubscribe, "$SYS/broker/#", true},
		{"ops", ops, broker.OpPublish, "sensors/x", false},
		{"anonymous", anon, broker.OpConnect, "", false},
		{"anonymous", anon, broker.OpSubscribe, "sensors/#", false},
		{"evil IDs", evil, broker.OpConnect, "", false}, // "+" does not start with building22
		{"evil IDs", evil, broker.OpPublish, "sensors/building22/x/telemetry", false},
		{"nil principal", nil, broker.OpConnect, "", false},
	}
	for _, r := range rows {
		if got := pol.Allow(r.p, r.op, r.topic); got != r.want {
			t.Errorf("%s %v %q = %v, want %v", r.who, r.op, r.topic, got, r.want)
		}
	}
	if !pol.CacheDecisions() {
		t.Error("cache defaults to Enabled")
	}
	if DenyAll.Allow(temp, broker.OpConnect, "") {
		t.Error("DenyAll allowed Connect")
	}
}

func TestStateStoreKeys(t *testing.T) {
	pol := matrix(t)
	b22 := &broker.Principal{ClientID: "building22-s1", Attributes: map[string]string{"building": "building22"}}
	star := &broker.Principal{ClientID: "*", Attributes: map[string]string{"building": "building22"}}
	for _, tc := range []struct {
		p     *broker.Principal
		key   string
		write bool
		want  bool
	}{
		{b22, "clients/building22-s1/x", false, true},
		{b22, "clients/building22-s1/x", true, false},
		{b22, "clients/building22-s1/rw/x", true, true},
		{b22, "clients/building22-s1/rw/x", false, true},
		{b22, "clients/other/x", false, false},
		{b22, "shared/anything", false, true},
		{b22, "shared/anything", true, false},
		{b22, "drop*box", true, true}, // String keys are exact: * is literal
		{b22, "dropXbox", true, false},
		{b22, "drop*box", false, false},
		{b22, "\x00\x01\x02", true, true}, // Binary AAEC
		{b22, "AAEC", true, false},
		{star, "clients/other/x", false, false}, // a client ID of * is literal
		{star, "clients/*/x", false, true},
	} {
		if got := pol.AllowKey(tc.p, []byte(tc.key), tc.write); got != tc.want {
			t.Errorf("%s key %q write=%v = %v, want %v", tc.p.ClientID, tc.key, tc.write, got, tc.want)
		}
	}
}

func BenchmarkAllowPublish(b *testing.B) {
	var rules []config.AuthorizationRule
	for i := range 50 {
		rules = append(rules, config.AuthorizationRule{
			Principals:      config.Principals{Usernames: []string{fmt.Sprint("user", i)}},
			BrokerResources: []config.BrokerResource{{Method: config.MethodPublish, Topics: []string{"site/+/line/{principal.username}/#"}}},
		})
	}
	pol, err := NewPolicy(&config.BrokerAuthorizationSpec{AuthorizationPolicies: config.AuthorizationPolicies{Rules: rules}})
	if err != nil {
		b.Fatal(err)
	}
	p := &broker.Principal{ClientID: "c", Username: "user49"}
	b.ReportAllocs()
	for b.Loop() {
		if !pol.Allow(p, broker.OpPublish, "site/berlin/line/user49/temp") {
			b.Fatal("denied")
		}
	}
}
