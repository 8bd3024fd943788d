package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// maxNodes bounds the YAML nodes one document may expand to, aliases
// included, so a small body cannot make the server walk a billion nodes.
const maxNodes = 100_000

// Document is one YAML document of a file or request body.
type Document struct {
	Index  int // 0-based position in the input
	Line   int // line where the document starts
	Kind   string
	Name   string  // as far as they could be read
	Object *Object // nil when Err is set
	Err    error   // a *ValidationError, or a problem with the document as a whole
	// Warnings name what was accepted but not applied: fields of an Azure
	// IoT Operations resource that Edgeport does not have.
	Warnings Errors
}

// DecodeAll reads every document of a YAML (or JSON) stream, decoding,
// defaulting and validating each one. A syntax error ends the stream: it is
// returned after the documents read before it.
func (k *Kinds) DecodeAll(data []byte) ([]Document, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []Document
	for i := 0; ; {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			k.validateRefs(docs)
			return docs, nil
		}
		if err != nil {
			k.validateRefs(docs)
			return docs, fmt.Errorf("document %d: %w", i+1, err)
		}
		if empty(&n) {
			continue
		}
		for _, item := range listItems(&n) {
			d := Document{Index: i, Line: item.Line}
			d.Object, d.Warnings, d.Err = k.decodeNode(item)
			d.Kind, d.Name = identify(item)
			if d.Object != nil {
				d.Kind, d.Name = d.Object.Kind, d.Object.Metadata.Name
			}
			docs = append(docs, d)
			i++
		}
	}
}

// validateRefs checks references between the valid documents of one
// stream (an Asset and the Device beside it in the same file).
func (k *Kinds) validateRefs(docs []Document) {
	byKey := map[Key]*Object{}
	for _, d := range docs {
		if d.Object != nil {
			byKey[d.Object.Key()] = d.Object
		}
	}
	lookup := func(key Key) (*Object, bool) { o, ok := byKey[key]; return o, ok }
	for i := range docs {
		d := &docs[i]
		if d.Object == nil {
			continue
		}
		def := k.LookupKind(d.Object.Kind)
		if def == nil || def.ValidateRefs == nil || def.RefsNeedRegistry {
			continue
		}
		var errs Errors
		def.ValidateRefs(d.Object, lookup, &errs)
		if len(errs) > 0 {
			d.Err = &ValidationError{Kind: d.Kind, Name: d.Name, Errs: errs}
			d.Object = nil
		}
	}
}

// Decode reads exactly one document (a request body).
func (k *Kinds) Decode(data []byte) (*Object, error) {
	obj, _, err := k.DecodeWarn(data)
	return obj, err
}

// DecodeWarn is Decode that also returns the warnings: what the document
// holds that was accepted but is not applied.
func (k *Kinds) DecodeWarn(data []byte) (*Object, Errors, error) {
	docs, err := k.DecodeAll(data)
	if err != nil {
		return nil, nil, err
	}
	switch len(docs) {
	case 0:
		return nil, nil, errors.New("no resource in the input")
	case 1:
		return docs[0].Object, docs[0].Warnings, docs[0].Err
	}
	return nil, nil, fmt.Errorf("%d documents in the input; send one resource", len(docs))
}

// listItems returns the items of a Kubernetes List (what `get -o yaml`
// prints for several resources), each read as a document of its own, or
// the document itself.
func listItems(doc *yaml.Node) []*yaml.Node {
	n := doc
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	if n.Kind != yaml.MappingNode || peek(n, "kind") != "List" {
		return []*yaml.Node{n} // its line is the first field's, not the --- before it
	}
	var items []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "items" && n.Content[i+1].Kind == yaml.SequenceNode {
			for _, it := range n.Content[i+1].Content {
				if !empty(it) {
					items = append(items, it)
				}
			}
		}
	}
	return items
}

func empty(n *yaml.Node) bool {
	if n.Kind == 0 {
		return true
	}
	if n.Kind == yaml.DocumentNode {
		return len(n.Content) == 0 || empty(n.Content[0])
	}
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// identify reads kind and metadata.name without validating anything, to
// name a document in messages.
func identify(n *yaml.Node) (kind, name string) {
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	get := func(m *yaml.Node, k string) *yaml.Node {
		if m == nil || m.Kind != yaml.MappingNode {
			return nil
		}
		for i := 0; i+1 < len(m.Content); i += 2 {
			if m.Content[i].Value == k {
				return m.Content[i+1]
			}
		}
		return nil
	}
	if v := get(n, "kind"); v != nil && v.Kind == yaml.ScalarNode {
		kind = v.Value
	}
	if v := get(get(n, "metadata"), "name"); v != nil && v.Kind == yaml.ScalarNode {
		name = v.Value
	}
	return kind, name
}

// decodeNode turns one document into a defaulted, validated object.
func (k *Kinds) decodeNode(doc *yaml.Node) (*Object, Errors, error) {
	n := doc
	if n.Kind == yaml.DocumentNode {
		n = n.Content[0]
	}
	d := &decoder{budget: maxNodes, lines: map[string]int{}}
	obj := &Object{}
	kindName, name := identify(n)
	if n.Kind != yaml.MappingNode {
		d.errs.addAt("", n.Line, "a resource must be a mapping with apiVersion, kind, metadata and spec")
		return nil, nil, &ValidationError{Errs: d.errs}
	}
	def := k.LookupKind(kindName)
	foreign := def != nil && foreignAPIVersion(def.Kind, peek(n, "apiVersion"))
	// An Azure IoT Operations resource is applied as it is written: the
	// fields Edgeport lacks (serviceType, cardinality, ...) are ignored
	// with a warning naming each, not refused.
	d.lenient = foreign
	var specNode *yaml.Node
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], n.Content[i+1]
		if !d.key(kn, "", seen) {
			continue
		}
		switch kn.Value {
		case "apiVersion":
			d.decode(vn, reflect.ValueOf(&obj.APIVersion).Elem(), "apiVersion")
		case "kind":
			d.decode(vn, reflect.ValueOf(&obj.Kind).Elem(), "kind")
		case "metadata":
			d.decode(vn, reflect.ValueOf(&obj.Metadata).Elem(), "metadata")
		case "spec":
			specNode = vn
		case "status":
			// Reported by the server; accepted so that the output of
			// `get -o yaml` can be applied again, and ignored.
		default:
			d.unknown(kn, "", kn.Value, []string{"apiVersion", "kind", "metadata", "spec", "status"})
		}
	}
	switch {
	case !seen["apiVersion"]:
		d.errs.addAt("apiVersion", n.Line, "required (%s)", APIVersion)
	case foreign:
		obj.APIVersion = APIVersion // stored as Edgeport's own
	case obj.APIVersion != APIVersion && !d.errs.covers("apiVersion"):
		if slices.Contains(aioAPIVersions, obj.APIVersion) {
			d.errs.addAt("apiVersion", n.Line, "must be %s (%s is accepted only for %s)", APIVersion, obj.APIVersion, strings.Join(aioKinds, ", "))
		} else {
			d.errs.addAt("apiVersion", n.Line, "must be %s", APIVersion)
		}
	}
	switch {
	case !seen["kind"]:
		d.errs.addAt("kind", n.Line, "required (one of %s)", strings.Join(k.Names(), ", "))
	case def == nil && !d.errs.covers("kind"):
		d.errs.addAt("kind", n.Line, "unknown kind %q (one of %s)", obj.Kind, strings.Join(k.Names(), ", "))
	}
	if def != nil {
		obj.Kind = def.Kind // accept any case, store the canonical name
		obj.Spec = def.New()
		if specNode != nil {
			d.decode(specNode, reflect.ValueOf(obj.Spec).Elem(), "spec")
		} else if def.SpecRequired {
			d.errs.addAt("spec", n.Line, "required")
		}
	}
	if d.budget < 0 {
		// Validating a half-read document would only add noise.
		return nil, nil, &ValidationError{Kind: canonicalKind(def, kindName), Name: name, Errs: d.errs.truncate()}
	}
	var ve Errors
	if def != nil {
		def.check(obj, &ve)
	} else {
		checkMetadata(&obj.Metadata, &ve)
	}
	decoded := d.errs.paths()
	for _, fe := range ve {
		if !decoded.covers(fe.Path) {
			if fe.Line = d.line(fe.Path); fe.Line == 0 {
				fe.Line = n.Line
			}
			d.errs = append(d.errs, fe)
		}
	}
	if len(d.errs) > 0 {
		return nil, nil, &ValidationError{Kind: canonicalKind(def, kindName), Name: name, Errs: d.errs.truncate()}
	}
	obj.Metadata.stripServerFields()
	return obj, d.warns.truncate(), nil
}

func canonicalKind(def *KindDef, fallback string) string {
	if def != nil {
		return def.Kind
	}
	return fallback
}

// decoder maps YAML nodes onto Go values by their json tags, rejecting
// unknown fields and mistyped values and recording each with its path.
type decoder struct {
	errs   Errors
	budget int
	lines  map[string]int // path -> line, to place validation errors
	// lenient turns unknown fields into warnings (an Azure IoT Operations
	// document); warns collects them.
	lenient bool
	warns   Errors
}

// line returns the line of path, or of the nearest field above it.
func (d *decoder) line(path string) int {
	for {
		if l, ok := d.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			return 0
		}
		path = path[:i]
	}
}

var timeType = reflect.TypeFor[time.Time]()

// key checks a mapping key: a plain string, not seen before in this mapping.
func (d *decoder) key(kn *yaml.Node, path string, seen map[string]bool) bool {
	if kn.Kind != yaml.ScalarNode || kn.ShortTag() == "!!merge" {
		d.errs.addAt(path, kn.Line, "merge keys and non-string keys are not supported")
		return false
	}
	if seen[kn.Value] {
		d.errs.addAt(key(path, kn.Value), kn.Line, "duplicate field")
		return false
	}
	seen[kn.Value] = true
	return true
}

// unknown reports a field that the type does not have, suggesting the
// field the user probably meant.
func (d *decoder) unknown(kn *yaml.Node, path, name string, known []string) {
	if d.lenient {
		d.warns.addAt(key(path, name), kn.Line, "ignored: Edgeport has no such field")
		return
	}
	if s := suggest(name, known); s != "" {
		d.errs.addAt(key(path, name), kn.Line, "unknown field (did you mean %q?)", s)
		return
	}
	d.errs.addAt(key(path, name), kn.Line, "unknown field")
}

// suggest finds the known field a misspelt or shortened name most likely
// meant: same letters ignoring case, a prefix of one another (port,
// maxPacketSize), or at most two edits away.
func suggest(name string, known []string) string {
	ln := strings.ToLower(name)
	best, bestDist := "", 3
	for _, k := range known {
		lk := strings.ToLower(k)
		if lk == ln {
			return k
		}
		if len(ln) >= 4 && (strings.HasPrefix(lk, ln) || strings.HasPrefix(ln, lk)) {
			return k
		}
		if d := editDistance(ln, lk); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	if d.budget--; d.budget < 0 || d.budget < len(n.Content) {
		if d.budget >= -1 {
			d.errs.addAt(path, n.Line, "document too large or too deeply aliased")
		}
		d.budget = -2 // stop here, before allocating for the rest
		return
	}
	d.lines[path] = n.Line
	if n.Kind == yaml.AliasNode {
		d.decode(n.Alias, v, path)
		d.lines[path] = n.Line // where it is used, not where it was anchored
		return
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		v.Set(reflect.Zero(v.Type())) // null means unset
		return
	}
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.decode(n, v.Elem(), path)
		return
	}
	if v.Type() == jsonType {
		d.decodeJSON(n, v, path)
		return
	}
	if v.Type() == timeType {
		var t time.Time
		if n.Kind != yaml.ScalarNode {
			d.errs.addAt(path, n.Line, "must be a time (RFC 3339)")
			return
		}
		t, err := time.Parse(time.RFC3339, n.Value)
		if err != nil {
			d.errs.addAt(path, n.Line, "must be a time (RFC 3339)")
			return
		}
		v.Set(reflect.ValueOf(t))
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.decodeStruct(n, v, path)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			d.errs.addAt(path, n.Line, "must be a mapping")
			return
		}
		m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			kn, vn := n.Content[i], n.Content[i+1]
			if !d.key(kn, path, seen) {
				continue
			}
			ev := reflect.New(v.Type().Elem()).Elem()
			d.decode(vn, ev, key(path, kn.Value))
			m.SetMapIndex(reflect.ValueOf(kn.Value), ev)
		}
		v.Set(m)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.errs.addAt(path, n.Line, "must be a list")
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, en := range n.Content {
			d.decode(en, s.Index(i), index(path, i))
		}
		v.Set(s)
	case reflect.String:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
			d.errs.addAt(path, n.Line, "must be a string%s", quoteHint(n))
			return
		}
		v.SetString(n.Value)
	case reflect.Bool:
		var b bool
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || n.Decode(&b) != nil {
			d.errs.addAt(path, n.Line, "must be true or false")
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		var i int64
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&i) != nil {
			d.errs.addAt(path, n.Line, "must be an integer")
			return
		}
		if v.OverflowInt(i) {
			d.errs.addAt(path, n.Line, "integer out of range")
			return
		}
		v.SetInt(i)
	case reflect.Float64:
		var f float64
		if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!int" && n.ShortTag() != "!!float") || n.Decode(&f) != nil ||
			math.IsNaN(f) || math.IsInf(f, 0) {
			d.errs.addAt(path, n.Line, "must be a number")
			return
		}
		v.SetFloat(f)
	default:
		// A kind's spec uses only the types above; reaching here is a bug
		// in the spec type, reported rather than panicking on user input.
		d.errs.addAt(path, n.Line, "cannot be set (unsupported field type %s)", v.Type())
	}
}

// quoteHint tells YAML users why 1.0 or yes is not a string.
func quoteHint(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode {
		return fmt.Sprintf(" (quote it: %q)", n.Value)
	}
	return ""
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.errs.addAt(path, n.Line, "must be a mapping")
		return
	}
	fields := structFields(v.Type())
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], n.Content[i+1]
		if !d.key(kn, path, seen) {
			continue
		}
		fi, ok := fields.index[kn.Value]
		if !ok {
			d.unknown(kn, path, kn.Value, fields.names)
			continue
		}
		d.decode(vn, v.Field(fi), field(path, kn.Value))
	}
}

// FieldName is the name a resource document uses for a spec or status
// struct field: its json tag's name, else the Go name. ok is false for a
// field documents do not carry (unexported, or tagged "-"). The decoder
// and the generated CRDs (internal/crd) both name fields by it.
func FieldName(f reflect.StructField) (name string, ok bool) {
	if !f.IsExported() {
		return "", false
	}
	name, _, _ = strings.Cut(f.Tag.Get("json"), ",")
	switch name {
	case "-":
		return "", false
	case "":
		return f.Name, true
	}
	return name, true
}

type fieldSet struct {
	index map[string]int
	names []string
}

// structFields maps json names to field indexes. Spec types are small, so
// computing this per decode costs less than a cache's synchronization.
func structFields(t reflect.Type) fieldSet {
	fs := fieldSet{index: make(map[string]int, t.NumField())}
	for i := range t.NumField() {
		name, ok := FieldName(t.Field(i))
		if !ok {
			continue
		}
		fs.index[name] = i
		fs.names = append(fs.names, name)
	}
	return fs
}
