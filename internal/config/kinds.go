package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// KindDef describes one kind of resource. Every kind goes through the same
// decoding, defaulting, validation, storage, API and CLI; a new kind only
// adds a KindDef.
type KindDef struct {
	Kind       string   // e.g. BrokerListener
	Plural     string   // URL path segment, e.g. brokerlisteners
	ShortNames []string // CLI abbreviations, e.g. listener, bl
	// Singleton, when set, is the only name a resource of this kind may
	// have (there is one Broker, "default").
	Singleton string
	// SpecRequired rejects documents without a spec.
	SpecRequired bool
	// New returns a pointer to a zero spec.
	New func() any
	// Default fills unset fields in place; it runs before Validate.
	Default func(spec any)
	// Validate records every problem of a defaulted spec, with paths
	// starting at "spec".
	Validate func(spec any, errs *Errors)
	// Columns are the kind-specific columns of `edgeport get`.
	Columns []Column
	// ValidateRefs, when set, checks a valid object against the resources
	// it references, which lookup finds (the registry when applying, the
	// other documents of the same file when decoding one). A reference
	// not found is not an error here: resources may arrive in any order,
	// and what runs them reports it in status.
	ValidateRefs func(obj *Object, lookup func(Key) (*Object, bool), errs *Errors)
	// RefsNeedRegistry marks a ValidateRefs for which a reference not
	// found is an error (a Dataflow's schemaRef): it runs against the
	// registry when applying only, not against one file's documents. Kinds
	// it refers to are applied first from a set of files (ApplyRank).
	RefsNeedRegistry bool
}

// Column is one kind-specific column of a table listing.
type Column struct {
	Header string
	Value  func(o *Object) string
}

// Define builds a KindDef for spec type S, so that kinds are written with
// typed functions.
func Define[S any](kind, plural string, shortNames []string, def func(*S), val func(*S, *Errors)) KindDef {
	return KindDef{
		Kind:       kind,
		Plural:     plural,
		ShortNames: shortNames,
		New:        func() any { return new(S) },
		Default: func(spec any) {
			if def != nil {
				def(spec.(*S))
			}
		},
		Validate: func(spec any, errs *Errors) {
			if val != nil {
				val(spec.(*S), errs)
			}
		},
	}
}

// Singular returns the lower-case kind name.
func (d *KindDef) Singular() string { return strings.ToLower(d.Kind) }

// checkMetadata validates what every kind has in common.
func checkMetadata(m *Metadata, errs *Errors) {
	validateName(m.Name, "metadata.name", errs)
	validateLabels(m.Labels, "metadata.labels", errs)
	for _, k := range sortedKeys(m.Annotations) {
		if len(k) == 0 || len(k) > 253 {
			errs.Add(key("metadata.annotations", k), "key must be 1 to 253 characters")
		}
	}
}

// check defaults and validates obj (envelope and spec) in place.
func (d *KindDef) check(obj *Object, errs *Errors) {
	checkMetadata(&obj.Metadata, errs)
	if m := &obj.Metadata; d.Singleton != "" && m.Name != "" && m.Name != d.Singleton {
		errs.Add("metadata.name", "must be %q: there is one %s per instance", d.Singleton, d.Kind)
	}
	if obj.Spec == nil {
		obj.Spec = d.New()
	}
	d.Default(obj.Spec)
	d.Validate(obj.Spec, errs)
}

var (
	nameRE       = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	labelValueRE = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`)
	dnsSubRE     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

// validateName applies Kubernetes' DNS label rule, so names work as file
// names, URL segments and (later) Kubernetes object names.
// CheckName says why name is not a valid resource name, or nil.
func CheckName(name string) error {
	var errs Errors
	validateName(name, "name", &errs)
	if len(errs) > 0 {
		return errors.New(errs[0].Msg)
	}
	return nil
}

func validateName(name, path string, errs *Errors) {
	switch {
	case name == "":
		errs.Add(path, "required")
	case len(name) > 63:
		errs.Add(path, "must be at most 63 characters")
	case !nameRE.MatchString(name):
		errs.Add(path, "must be lower-case letters, digits and '-', starting and ending with a letter or digit")
	}
}

func validateLabels(labels map[string]string, path string, errs *Errors) {
	for _, k := range sortedKeys(labels) {
		p := key(path, k)
		prefix, name, hasPrefix := strings.Cut(k, "/")
		if !hasPrefix {
			name, prefix = prefix, ""
		}
		if hasPrefix && (len(prefix) > 253 || !dnsSubRE.MatchString(prefix)) {
			errs.Add(p, "key prefix must be a DNS subdomain")
		}
		if name == "" || len(name) > 63 || !labelValueRE.MatchString(name) {
			errs.Add(p, "key must be 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit")
		}
		if v := labels[k]; len(v) > 63 || !labelValueRE.MatchString(v) {
			errs.Add(p, "value must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit")
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// stripServerFields drops what only the server may set.
func (m *Metadata) stripServerFields() {
	m.UID, m.Generation, m.CreationTimestamp = "", 0, nil
	m.Namespace = ""
	for k := range m.Annotations {
		if strings.HasPrefix(k, "edgeport.io/") {
			delete(m.Annotations, k)
		}
	}
	if len(m.Annotations) == 0 {
		m.Annotations = nil
	}
}

// Kinds is the set of kinds a server or client knows.
type Kinds struct {
	defs []*KindDef
}

// NewKinds returns a registry of the given kinds.
func NewKinds(defs ...KindDef) *Kinds {
	k := &Kinds{}
	for i := range defs {
		d := defs[i]
		k.defs = append(k.defs, &d)
	}
	return k
}

// Builtin returns the kinds Edgeport serves.
func Builtin() *Kinds {
	return NewKinds(brokerKind(), brokerListenerKind(), brokerAuthenticationKind(), brokerAuthorizationKind(),
		deviceKind(), assetKind(), discoveredDeviceKind(),
		dataflowKind(), dataflowEndpointKind(), dataflowProfileKind(),
		schemaKind())
}

// All returns every kind in registration order.
func (k *Kinds) All() []*KindDef { return k.defs }

// Names returns the kind names.
func (k *Kinds) Names() []string {
	out := make([]string, len(k.defs))
	for i, d := range k.defs {
		out[i] = d.Kind
	}
	return out
}

// LookupKind finds a kind by its kind name, ignoring case (the kind field
// of a document).
func (k *Kinds) LookupKind(name string) *KindDef {
	for _, d := range k.defs {
		if strings.EqualFold(name, d.Kind) {
			return d
		}
	}
	return nil
}

// Lookup finds a kind by its name, plural or short name, ignoring case
// (the CLI's KIND argument).
func (k *Kinds) Lookup(name string) *KindDef {
	for _, d := range k.defs {
		if strings.EqualFold(name, d.Kind) || strings.EqualFold(name, d.Plural) {
			return d
		}
		for _, s := range d.ShortNames {
			if strings.EqualFold(name, s) {
				return d
			}
		}
	}
	return nil
}

// Check defaults and validates an object built in code (decoded objects
// are already checked), returning a *ValidationError.
func (k *Kinds) Check(obj *Object) error {
	def := k.LookupKind(obj.Kind)
	var errs Errors
	if obj.APIVersion != APIVersion {
		errs.Add("apiVersion", "must be %s", APIVersion)
	}
	if def == nil {
		errs.Add("kind", "unknown kind %q (one of %s)", obj.Kind, strings.Join(k.Names(), ", "))
		return &ValidationError{Kind: obj.Kind, Name: obj.Metadata.Name, Errs: errs}
	}
	obj.Kind = def.Kind
	def.check(obj, &errs)
	if len(errs) > 0 {
		return &ValidationError{Kind: obj.Kind, Name: obj.Metadata.Name, Errs: errs}
	}
	return nil
}

// DecodeJSON decodes an object written by the server (a client reading
// the API); unlike Decode it tolerates fields it does not know, since the
// server may be newer than the client.
func (k *Kinds) DecodeJSON(data []byte) (*Object, error) {
	var head struct {
		Kind string `json:"kind"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("decoding resource: %w", err)
	}
	def := k.LookupKind(head.Kind)
	if def == nil {
		return nil, fmt.Errorf("decoding resource: unknown kind %q", head.Kind)
	}
	obj := &Object{Spec: def.New()}
	if err := json.Unmarshal(data, obj); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", def.Kind, err)
	}
	return obj, nil
}

// Clone deep-copies obj through its JSON form, which every spec type has.
func (k *Kinds) Clone(obj *Object) *Object {
	data, err := json.Marshal(obj)
	if err != nil {
		panic(fmt.Sprintf("config: marshaling %s: %v", obj.Key(), err)) // spec types always marshal
	}
	c, err := k.DecodeJSON(data)
	if err != nil {
		panic(fmt.Sprintf("config: cloning %s: %v", obj.Key(), err))
	}
	return c
}
