package config

import (
	"fmt"
	"strings"
)

// SchemaRefScheme starts a reference to a schema in the registry, as in
// Azure IoT Operations' dataflows: aio-sr://<namespace>/<name>:<version>.
const SchemaRefScheme = "aio-sr://"

// SchemaRef is a parsed schemaRef. Edgeport has one registry namespace;
// one written in the reference is accepted and ignored, so Azure IoT
// Operations manifests carry over.
type SchemaRef struct {
	Namespace string // as written; not used
	Name      string
	Version   string
}

func (r SchemaRef) String() string { return SchemaRefScheme + r.Name + ":" + r.Version }

// ParseSchemaRef reads aio-sr://[<namespace>/]<name>:<version>.
func ParseSchemaRef(s string) (SchemaRef, error) {
	rest, ok := strings.CutPrefix(s, SchemaRefScheme)
	if !ok {
		return SchemaRef{}, fmt.Errorf("must be %s<name>:<version> (got %q)", SchemaRefScheme, s)
	}
	var r SchemaRef
	if ns, after, found := strings.Cut(rest, "/"); found {
		r.Namespace, rest = ns, after
	}
	name, version, found := strings.Cut(rest, ":")
	switch {
	case !found || version == "":
		return SchemaRef{}, fmt.Errorf("must name a version: %s<name>:<version> (got %q)", SchemaRefScheme, s)
	case !versionNameRE.MatchString(version):
		return SchemaRef{}, fmt.Errorf("version must be a number (got %q in %q)", version, s)
	case name == "":
		return SchemaRef{}, fmt.Errorf("must name a schema: %s<name>:<version> (got %q)", SchemaRefScheme, s)
	}
	var errs Errors
	validateName(name, "name", &errs)
	if len(errs) > 0 {
		return SchemaRef{}, fmt.Errorf("schema name %q: %s", name, errs[0].Msg)
	}
	r.Name, r.Version = name, version
	return r, nil
}

// SchemaRefs lists a flow's schema references with their field paths:
// the source's (checks what arrives) and the transformation's (checks what
// leaves, and gives a Parquet destination its columns).
func (s *DataflowSpec) SchemaRefs() []DataflowSchemaUse {
	var out []DataflowSchemaUse
	for i := range s.Operations {
		op := &s.Operations[i]
		p := index("spec.operations", i)
		switch {
		case op.OperationType == OperationSource && op.SourceSettings != nil && op.SourceSettings.SchemaRef != "":
			out = append(out, DataflowSchemaUse{Role: SchemaRoleSource, Ref: op.SourceSettings.SchemaRef, Path: field(field(p, "sourceSettings"), "schemaRef")})
		case op.OperationType == OperationBuiltInTransformation && op.BuiltInTransformationSettings != nil && op.BuiltInTransformationSettings.SchemaRef != "":
			out = append(out, DataflowSchemaUse{Role: SchemaRoleOutput, Ref: op.BuiltInTransformationSettings.SchemaRef, Path: field(field(p, "builtInTransformationSettings"), "schemaRef")})
		}
	}
	return out
}

// Roles of a schema in a dataflow.
const (
	SchemaRoleSource = "source" // incoming messages are validated
	SchemaRoleOutput = "output" // transformed messages are validated; Parquet columns
)

// DataflowSchemaUse is one schemaRef of a flow.
type DataflowSchemaUse struct {
	Role string
	Ref  string
	Path string // the field it is written in
}

// ResolveSchemaRef finds the version a reference names; the error says
// what is missing.
func ResolveSchemaRef(ref string, lookup func(Key) (*Object, bool)) (*Object, *SchemaVersion, SchemaRef, error) {
	r, err := ParseSchemaRef(ref)
	if err != nil {
		return nil, nil, r, err
	}
	o, ok := lookup(Key{Kind: "Schema", Name: r.Name})
	if !ok {
		return nil, nil, r, fmt.Errorf("no Schema %q (apply it first, or register it through the schema registry API)", r.Name)
	}
	spec := o.Spec.(*SchemaSpec)
	v := spec.Version(r.Version)
	if v == nil {
		names := make([]string, len(spec.Versions))
		for i, sv := range spec.Versions {
			names[i] = sv.Name
		}
		return nil, nil, r, fmt.Errorf("schema %q has no version %s (it has %s)", r.Name, r.Version, strings.Join(names, ", "))
	}
	return o, v, r, nil
}

// validateDataflowRefs checks that every schemaRef names a stored schema
// version, and that a schema giving Parquet columns can give them.
func validateDataflowRefs(obj *Object, lookup func(Key) (*Object, bool), errs *Errors) {
	s := obj.Spec.(*DataflowSpec)
	t := s.Transformation()
	for _, u := range s.SchemaRefs() {
		o, v, _, err := ResolveSchemaRef(u.Ref, lookup)
		if err != nil {
			errs.Add(u.Path, "%v", err)
			continue
		}
		if u.Role != SchemaRoleOutput || t == nil || (t.SerializationFormat != FormatParquet && t.SerializationFormat != FormatDelta) {
			continue
		}
		c, err := CompileSchemaContent(o.Spec.(*SchemaSpec).Format, v.SchemaContent)
		if err != nil {
			errs.Add(u.Path, "%v", err)
			continue
		}
		if _, err := c.Fields(); err != nil {
			errs.Add(u.Path, "cannot define %s columns: %v", t.SerializationFormat, err)
		}
	}
}

// ApplyRank orders kinds for applying a set of resources: kinds that
// other kinds' references are checked against at apply time (a Dataflow's
// schemaRef names a Schema) come first, so that files may define them in
// any order.
func ApplyRank(kind string) int {
	if kind == "Schema" {
		return 0
	}
	return 1
}

// SchemaUse is one user of a schema: a dataflow's schemaRef (role source
// or output) or an asset dataset whose connector registered the schema of
// what it publishes (role publish).
type SchemaUse struct {
	Kind    string `json:"kind"`
	Name    string `json:"name"`
	Role    string `json:"role"`
	Version string `json:"version"`
	// Topics are the topic filters the messages come from (source), or
	// the topics they are published on (publish).
	Topics []string `json:"topics,omitempty"`
	// Destination is where an output goes: endpoint and dataDestination.
	Destination string `json:"destination,omitempty"`
}

// SchemaRolePublish is an asset dataset publishing messages of the schema.
const SchemaRolePublish = "publish"

// SchemaUses lists the dataflows and asset datasets that use the schema
// named name, in the order given.
func SchemaUses(name string, flows, assets []*Object) []SchemaUse {
	var out []SchemaUse
	for _, o := range flows {
		s, ok := o.Spec.(*DataflowSpec)
		if !ok {
			continue
		}
		for _, u := range s.SchemaRefs() {
			r, err := ParseSchemaRef(u.Ref)
			if err != nil || r.Name != name {
				continue
			}
			use := SchemaUse{Kind: o.Kind, Name: o.Metadata.Name, Role: u.Role, Version: r.Version}
			if src := s.Source(); u.Role == SchemaRoleSource && src != nil {
				use.Topics = src.DataSources
			}
			if d := s.Destination(); u.Role == SchemaRoleOutput && d != nil {
				use.Destination = d.EndpointRef + ":" + d.DataDestination
			}
			out = append(out, use)
		}
	}
	for _, o := range assets {
		if o.Status == nil {
			continue
		}
		for _, ds := range o.Status.Datasets {
			r, err := ParseSchemaRef(ds.SchemaRef)
			if err != nil || r.Name != name {
				continue
			}
			use := SchemaUse{Kind: o.Kind, Name: o.Metadata.Name + "/" + ds.Name, Role: SchemaRolePublish, Version: r.Version}
			if ds.Topic != "" {
				use.Topics = []string{ds.Topic}
			}
			out = append(out, use)
		}
	}
	return out
}
