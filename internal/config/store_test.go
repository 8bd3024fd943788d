package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func listenerDoc(name string, port int, labels string) string {
	return "apiVersion: edgeport.io/v1\nkind: BrokerListener\nmetadata:\n  name: " + name +
		"\n  labels: {" + labels + "}\nspec:\n  ports:\n  - port: " + itoaInt(port) + "\n"
}

func itoaInt(i int) string { return itoa(&i) }

func mustDecode(t *testing.T, doc string) *Object {
	t.Helper()
	obj, err := Builtin().Decode([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return obj
}

type recorder struct {
	mu   sync.Mutex
	keys []Key
}

func (r *recorder) add(k Key) { r.mu.Lock(); r.keys = append(r.keys, k); r.mu.Unlock() }

func (r *recorder) take() []Key {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := r.keys
	r.keys = nil
	return k
}

func TestStoreLifecycle(t *testing.T) {
	dir := t.TempDir()
	s := NewStore(Builtin(), dir, nil)
	var rec recorder
	s.Watch(rec.add)
	k := Key{"BrokerListener", "a"}

	res, obj, err := s.Apply(mustDecode(t, listenerDoc("a", 1883, "app: x")), ApplyOptions{})
	if err != nil || res != Created {
		t.Fatalf("create: %v %v", res, err)
	}
	if obj.Metadata.Generation != 1 || obj.Metadata.UID == "" || obj.Metadata.CreationTimestamp == nil {
		t.Fatalf("server fields not set: %+v", obj.Metadata)
	}
	if got := obj.Spec.(*BrokerListenerSpec).Ports[0].Address; got != DefaultListenerAddress {
		t.Fatalf("default address not applied: %q", got)
	}
	if obj.Ready().Status != ConditionUnknown {
		t.Fatalf("new resource is %v, want Unknown", obj.Ready())
	}
	if got := rec.take(); len(got) != 1 || got[0] != k {
		t.Fatalf("watch got %v", got)
	}
	stored := filepath.Join(dir, "brokerlistener", "a.json")
	if fi, err := os.Stat(stored); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("stored file: %v %v", fi, err)
	}

	// Same content: unchanged, no notification, same generation.
	res, obj, err = s.Apply(mustDecode(t, listenerDoc("a", 1883, "app: x")), ApplyOptions{})
	if err != nil || res != Unchanged || obj.Metadata.Generation != 1 {
		t.Fatalf("re-apply: %v %v gen %d", res, err, obj.Metadata.Generation)
	}
	if got := rec.take(); len(got) != 0 {
		t.Fatalf("unchanged apply notified %v", got)
	}
	// A label change is configured but keeps the generation.
	res, obj, _ = s.Apply(mustDecode(t, listenerDoc("a", 1883, "app: y")), ApplyOptions{})
	if res != Configured || obj.Metadata.Generation != 1 {
		t.Fatalf("label change: %v gen %d", res, obj.Metadata.Generation)
	}
	// A spec change bumps it.
	res, obj, _ = s.Apply(mustDecode(t, listenerDoc("a", 1884, "app: y")), ApplyOptions{})
	if res != Configured || obj.Metadata.Generation != 2 {
		t.Fatalf("spec change: %v gen %d", res, obj.Metadata.Generation)
	}
	if _, _, err := s.Apply(mustDecode(t, listenerDoc("a", 1, "")), ApplyOptions{CreateOnly: true}); !errors.Is(err, ErrExists) {
		t.Fatalf("create of existing: %v", err)
	}
	if _, _, err := s.Apply(mustDecode(t, listenerDoc("b", 1, "")), ApplyOptions{DryRun: true}); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Get(Key{"BrokerListener", "b"}); ok {
		t.Fatal("dry run stored the resource")
	}

	// Status: stale uid or future generation is ignored; Ready changes make events.
	s.SetStatus(k, "other-uid", 2, Status{Conditions: []Condition{{Type: ConditionReady, Status: ConditionTrue}}})
	if o, _ := s.Get(k); o.Ready().Status != ConditionUnknown {
		t.Fatal("status for another uid was applied")
	}
	s.SetStatus(k, obj.Metadata.UID, 2, Status{Conditions: []Condition{{Type: ConditionReady, Status: ConditionFalse, Reason: "BindFailed", Message: "busy"}}})
	o, _ := s.Get(k)
	if c := o.Ready(); c.Status != ConditionFalse || c.Reason != "BindFailed" || o.Status.ObservedGeneration != 2 || c.LastTransitionTime.IsZero() {
		t.Fatalf("status not applied: %+v", o.Status)
	}
	evs, _ := s.Events(k)
	if last := evs[len(evs)-1]; last.Type != EventWarning || last.Reason != "BindFailed" {
		t.Fatalf("events %+v", evs)
	}

	// A second store on the same directory reloads the resource.
	s2 := NewStore(Builtin(), dir, nil)
	if err := s2.Load(); err != nil {
		t.Fatal(err)
	}
	o2, ok := s2.Get(k)
	if !ok || o2.Metadata.UID != obj.Metadata.UID || o2.Metadata.Generation != 2 || o2.Metadata.Labels["app"] != "y" {
		t.Fatalf("reloaded %+v", o2)
	}

	if _, err := s.Delete(k, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stored); !os.IsNotExist(err) {
		t.Fatalf("stored file survives delete: %v", err)
	}
	if _, err := s.Delete(k, ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

func TestStoreConfigFileOwnership(t *testing.T) {
	dir := t.TempDir()
	s := NewStore(Builtin(), dir, nil)
	k := Key{"BrokerListener", "a"}
	if _, _, err := s.Apply(mustDecode(t, listenerDoc("a", 1883, "")), ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	// A config file takes the resource over from the API.
	res, obj, err := s.Apply(mustDecode(t, listenerDoc("a", 1884, "")), ApplyOptions{Source: "/etc/edgeport/a.yaml"})
	if err != nil || res != Configured || obj.Metadata.Annotations[AnnotationConfigFile] != "/etc/edgeport/a.yaml" {
		t.Fatalf("takeover: %v %v %+v", res, err, obj.Metadata)
	}
	if _, err := os.Stat(filepath.Join(dir, "brokerlistener", "a.json")); !os.IsNotExist(err) {
		t.Fatal("API copy kept after a config file took over")
	}
	// The API may neither change nor delete it.
	_, _, err = s.Apply(mustDecode(t, listenerDoc("a", 1885, "")), ApplyOptions{})
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "/etc/edgeport/a.yaml") {
		t.Fatalf("API apply over config: %v", err)
	}
	if _, err := s.Delete(k, ""); !errors.Is(err, ErrConflict) {
		t.Fatalf("API delete of config resource: %v", err)
	}
	// Annotations in the input cannot claim a config file.
	in := mustDecode(t, listenerDoc("b", 1, ""))
	in.Metadata.Annotations = map[string]string{AnnotationConfigFile: "/x.yaml", "note": "kept"}
	_, obj, _ = s.Apply(in, ApplyOptions{})
	if _, ok := obj.Metadata.Annotations[AnnotationConfigFile]; ok || obj.Metadata.Annotations["note"] != "kept" {
		t.Fatalf("annotations %v", obj.Metadata.Annotations)
	}
	evs, _ := s.Events(k)
	if len(evs) < 2 || evs[1].Reason != "ConfigFileOverride" {
		t.Fatalf("events %+v", evs)
	}
}

func TestStoreListSelector(t *testing.T) {
	s := NewStore(Builtin(), "", nil)
	for _, d := range []string{
		listenerDoc("a", 1, "env: prod, tier: edge"),
		listenerDoc("b", 2, "env: dev"),
		listenerDoc("c", 3, ""),
	} {
		if _, _, err := s.Apply(mustDecode(t, d), ApplyOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct{ sel, want string }{
		{"", "a,b,c"},
		{"env=prod", "a"},
		{"env==dev", "b"},
		{"env!=prod", "b,c"},
		{"env", "a,b"},
		{"!env", "c"},
		{"env in (prod, dev),tier", "a"},
		{"env notin (prod)", "b,c"},
	} {
		sel, err := ParseSelector(tc.sel)
		if err != nil {
			t.Fatalf("%q: %v", tc.sel, err)
		}
		var names []string
		for _, o := range s.List("BrokerListener", sel) {
			names = append(names, o.Metadata.Name)
		}
		if got := strings.Join(names, ","); got != tc.want {
			t.Errorf("selector %q: got %s, want %s", tc.sel, got, tc.want)
		}
	}
	for _, bad := range []string{"a=b c", "=x", "env in prod", "k=v!"} {
		if _, err := ParseSelector(bad); err == nil {
			t.Errorf("selector %q accepted", bad)
		}
	}
}

func TestDecodeLimits(t *testing.T) {
	// Aliases that multiply a small body into millions of nodes are cut
	// off, not walked.
	var b strings.Builder
	b.WriteString("apiVersion: edgeport.io/v1\nkind: BrokerAuthorization\nmetadata: {name: bomb}\n")
	b.WriteString("spec:\n  authorizationPolicies:\n    rules:\n    - &r\n      principals:\n        clientIds: &ids [")
	for i := range 2000 {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString("c")
	}
	b.WriteString("]\n      brokerResources: [{method: Connect}]\n")
	for range 2000 {
		b.WriteString("    - *r\n")
	}
	_, err := Builtin().Decode([]byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "too large") {
		t.Fatalf("alias bomb: %.300v", err)
	}
	// Line numbers point at the field.
	docs, _ := Builtin().DecodeAll([]byte("apiVersion: edgeport.io/v1\nkind: BrokerListener\nmetadata: {name: x}\nspec:\n  ports:\n  - port: 99999\n    bogus: 1\n"))
	var ve *ValidationError
	if len(docs) != 1 || !errors.As(docs[0].Err, &ve) || ve.Errs[0].Line != 7 {
		t.Fatalf("lines: %+v", docs)
	}
	if _, err := Builtin().Decode([]byte("apiVersion: edgeport.io/v1\n---\nkind: Broker\n")); err == nil {
		t.Fatal("two documents accepted as one")
	}
}

func TestJSONToYAMLRoundTrip(t *testing.T) {
	for _, f := range []string{"testdata/listeners.good.yaml", "testdata/authz.good.yaml", "testdata/broker-full.good.yaml"} {
		data, _ := os.ReadFile(f)
		docs, err := Builtin().DecodeAll(data)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range docs {
			out := mustRender(t, d.Object)
			again, err := Builtin().Decode(out)
			if err != nil {
				t.Fatalf("%s: rendered YAML does not decode: %v\n%s", f, err, out)
			}
			if !jsonEqual(again, d.Object) {
				t.Fatalf("%s: round trip changed the object:\n%s", f, out)
			}
		}
	}
}

func mustRender(t *testing.T, o *Object) []byte {
	t.Helper()
	data, err := jsonMarshal(o)
	if err != nil {
		t.Fatal(err)
	}
	y, err := JSONToYAML(data)
	if err != nil {
		t.Fatal(err)
	}
	return y
}
