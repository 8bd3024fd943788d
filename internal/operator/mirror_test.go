package operator

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/edgeport/edgeport/internal/config"
)

// Every spec field that looks like a reference to a Secret or a ConfigMap
// is followed (or known not to be one): a new kind's credentials would
// otherwise silently never reach the data directory.
func TestRefFieldsKnown(t *testing.T) {
	seen := map[string]bool{}
	for _, def := range config.Builtin().All() {
		walkFields(reflect.TypeOf(def.New()), map[reflect.Type]bool{}, func(name string) {
			l := strings.ToLower(name)
			if strings.HasSuffix(l, "file") || !(strings.Contains(l, "secret") || strings.Contains(l, "configmap") ||
				strings.Contains(l, "trusted") || strings.Contains(l, "trustlist")) {
				return
			}
			seen[name] = true
			if !slices.Contains(secretRefFields, name) && !slices.Contains(configMapRefFields, name) &&
				!slices.Contains(notRefFields, name) {
				t.Errorf("%s field %q looks like a Secret or ConfigMap reference: add it to secretRefFields, configMapRefFields or notRefFields", def.Kind, name)
			}
		})
	}
	for _, f := range append(append(slices.Clone(secretRefFields), configMapRefFields...), notRefFields...) {
		if !seen[f] {
			t.Errorf("%q is no field of any kind any more", f)
		}
	}
}

func walkFields(t reflect.Type, visiting map[reflect.Type]bool, fn func(name string)) {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || visiting[t] {
		return
	}
	visiting[t] = true
	defer delete(visiting, t)
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		fn(name)
		walkFields(t.Field(i).Type, visiting, fn)
	}
}

// References are found wherever they are nested; a Device credential
// "name/key" references the Secret name.
func TestCollectRefs(t *testing.T) {
	objs, err := config.Builtin().DecodeAll([]byte(`
apiVersion: edgeport.io/v1
kind: BrokerListener
metadata: {name: l}
spec:
  ports:
  - port: 8883
    tls:
      mode: Manual
      manual: {secretRef: server-tls}
      clientAuth: {mode: Required, trustedCaCert: clients-ca}
---
apiVersion: edgeport.io/v1
kind: Device
metadata: {name: d}
spec:
  endpoints:
    inbound:
      plc:
        endpointType: Microsoft.OpcUa
        address: opc.tcp://127.0.0.1:4840
        authentication:
          method: UsernamePassword
          usernamePasswordCredentials: {usernameSecretName: plc-creds/user, passwordSecretName: plc-creds/pass}
`))
	if err != nil {
		t.Fatal(err)
	}
	var in []*config.Object
	for _, d := range objs {
		if d.Err != nil {
			t.Fatal(d.Err)
		}
		in = append(in, d.Object)
	}
	r := collectRefs(in)
	if !r.secrets["server-tls"] || !r.secrets["plc-creds"] || len(r.secrets) != 2 {
		t.Errorf("secrets %v", r.secrets)
	}
	if !r.configMaps["clients-ca"] || len(r.configMaps) != 1 {
		t.Errorf("config maps %v", r.configMaps)
	}
}
