package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// Schema formats (format of a Schema), spelled as Azure IoT Operations'
// schema registry spells them; JsonSchema/2020-12 is Edgeport's addition.
const (
	SchemaFormatJSONDraft07 = "JsonSchema/draft-07"
	SchemaFormatJSON2020    = "JsonSchema/2020-12"
	SchemaFormatDelta       = "Delta/1.0"
)

// SchemaTypeMessage is the one schemaType Azure IoT Operations defines.
const SchemaTypeMessage = "MessageSchema"

// Compatibility modes: what a new version must keep working.
const (
	CompatNone     = "None"
	CompatBackward = "Backward" // data written with the previous version validates under the new one
	CompatForward  = "Forward"  // data written with the new version validates under the previous one
	CompatFull     = "Full"     // both
)

// SchemaSpec is the Schema kind: a named message schema with numbered,
// immutable versions. Fields follow Azure IoT Operations' schema registry
// (displayName, description, format, schemaType, tags, versions with
// schemaContent); compatibility is Edgeport's.
type SchemaSpec struct {
	DisplayName string            `json:"displayName,omitempty"`
	Description string            `json:"description,omitempty"`
	Format      string            `json:"format"`
	SchemaType  string            `json:"schemaType,omitempty"`
	Tags        map[string]string `json:"tags,omitempty"`
	// Compatibility is checked between consecutive versions (default
	// Backward).
	Compatibility string          `json:"compatibility,omitempty"`
	Versions      []SchemaVersion `json:"versions"`
}

// SchemaVersion is one version: a number and the schema document, kept
// as the exact text given (its hash is over these bytes).
type SchemaVersion struct {
	Name          string `json:"name"`
	Description   string `json:"description,omitempty"`
	SchemaContent string `json:"schemaContent"`
}

// SchemaVersionStatus is a stored version as the registry serves it.
type SchemaVersionStatus struct {
	Name string `json:"name"`
	Hash string `json:"hash"`
}

// SchemaContentHash is the hash a version is stored under: the hex
// SHA-256 of its exact content (connector-registered schemas are named by
// it).
func SchemaContentHash(content string) string {
	sum := sha256.Sum256([]byte(content))
	return hex.EncodeToString(sum[:])
}

// Latest returns the version with the highest number, or nil.
func (s *SchemaSpec) Latest() *SchemaVersion {
	var best *SchemaVersion
	for i := range s.Versions {
		v := &s.Versions[i]
		if best == nil || versionNumber(v.Name) > versionNumber(best.Name) {
			best = v
		}
	}
	return best
}

// Version returns the version with the given name, or nil.
func (s *SchemaSpec) Version(name string) *SchemaVersion {
	for i := range s.Versions {
		if s.Versions[i].Name == name {
			return &s.Versions[i]
		}
	}
	return nil
}

func versionNumber(name string) uint64 {
	n, _ := strconv.ParseUint(name, 10, 64)
	return n
}

func schemaKind() KindDef {
	d := Define("Schema", "schemas", []string{"sch"}, defaultSchema, validateSchema)
	d.SpecRequired = true
	d.ValidateRefs = validateSchemaImmutable
	d.Columns = []Column{
		{"FORMAT", func(o *Object) string { return o.Spec.(*SchemaSpec).Format }},
		{"COMPATIBILITY", func(o *Object) string { return o.Spec.(*SchemaSpec).Compatibility }},
		{"VERSIONS", func(o *Object) string {
			s := o.Spec.(*SchemaSpec)
			names := make([]string, len(s.Versions))
			for i, v := range s.Versions {
				names[i] = v.Name
			}
			return strings.Join(names, ",")
		}},
		{"USED-BY", func(o *Object) string {
			if o.Status == nil || len(o.Status.UsedBy) == 0 {
				return ""
			}
			n := map[string]int{}
			var kinds []string
			for _, u := range o.Status.UsedBy {
				if n[u.Kind] == 0 {
					kinds = append(kinds, u.Kind)
				}
				n[u.Kind]++
			}
			parts := make([]string, len(kinds))
			for i, k := range kinds {
				parts[i] = strconv.Itoa(n[k]) + " " + strings.ToLower(k)
				if n[k] > 1 {
					parts[i] += "s"
				}
			}
			return strings.Join(parts, ",")
		}},
		{"LATEST-HASH", func(o *Object) string {
			if v := o.Spec.(*SchemaSpec).Latest(); v != nil {
				return SchemaContentHash(v.SchemaContent)[:12]
			}
			return ""
		}},
	}
	return d
}

func defaultSchema(s *SchemaSpec) {
	if s.SchemaType == "" {
		s.SchemaType = SchemaTypeMessage
	}
	if s.Compatibility == "" {
		s.Compatibility = CompatBackward
	}
}

// versionNameRE: Azure IoT Operations allows version names of digits only.
var versionNameRE = regexp.MustCompile(`^(0|[1-9][0-9]{0,8})$`)

func validateSchema(s *SchemaSpec, errs *Errors) {
	formats := []string{SchemaFormatDelta, SchemaFormatJSON2020, SchemaFormatJSONDraft07}
	switch {
	case s.Format == "":
		errs.Add("spec.format", "required (one of %s)", joinOr(formats))
	case !slices.Contains(formats, s.Format):
		errs.Add("spec.format", "must be one of %s (got %q)", joinOr(formats), s.Format)
	}
	if s.SchemaType != SchemaTypeMessage {
		errs.Add("spec.schemaType", "must be %s (got %q)", SchemaTypeMessage, s.SchemaType)
	}
	modes := []string{CompatBackward, CompatForward, CompatFull, CompatNone}
	if !slices.Contains(modes, s.Compatibility) {
		errs.Add("spec.compatibility", "must be one of %s (got %q)", joinOr(modes), s.Compatibility)
	}
	for _, k := range sortedKeys(s.Tags) {
		if k == "" || len(k) > 256 {
			errs.Add(key("spec.tags", k), "key must be 1 to 256 characters")
		}
	}
	if len(s.Versions) == 0 {
		errs.Add("spec.versions", "at least one version is required")
	}
	parsed := make([]*schemaNode, len(s.Versions))
	seen := map[string]int{}
	for i, v := range s.Versions {
		path := index("spec.versions", i)
		switch {
		case v.Name == "":
			errs.Add(field(path, "name"), "required")
		case !versionNameRE.MatchString(v.Name):
			errs.Add(field(path, "name"), "must be a number (digits only, no leading zeros; got %q)", v.Name)
		default:
			if j, dup := seen[v.Name]; dup {
				errs.Add(field(path, "name"), "duplicate version %s (also spec.versions[%d])", v.Name, j)
			} else if i > 0 && versionNameRE.MatchString(s.Versions[i-1].Name) && versionNumber(v.Name) < versionNumber(s.Versions[i-1].Name) {
				errs.Add(field(path, "name"), "versions must be listed in ascending order (%s after %s)", v.Name, s.Versions[i-1].Name)
			}
			seen[v.Name] = i
		}
		cpath := field(path, "schemaContent")
		if strings.TrimSpace(v.SchemaContent) == "" {
			errs.Add(cpath, "required")
			continue
		}
		n, err := CompileSchemaContent(s.Format, v.SchemaContent)
		if err != nil {
			errs.Add(cpath, "%v", err)
			continue
		}
		parsed[i] = n
	}
	if s.Compatibility == CompatNone {
		return
	}
	for i := 1; i < len(s.Versions); i++ {
		if parsed[i-1] == nil || parsed[i] == nil {
			continue
		}
		if breaks := SchemaCompatibility(s.Compatibility, parsed[i-1], parsed[i]); len(breaks) > 0 {
			errs.Add(field(index("spec.versions", i), "schemaContent"), "not %s compatible with version %s: %s",
				s.Compatibility, s.Versions[i-1].Name, strings.Join(breaks, "; "))
		}
	}
}

// validateSchemaImmutable refuses to change the content of a version that
// is already stored. Removing an old version is allowed.
func validateSchemaImmutable(obj *Object, lookup func(Key) (*Object, bool), errs *Errors) {
	old, ok := lookup(obj.Key())
	if !ok || old == obj {
		return
	}
	prev, ok := old.Spec.(*SchemaSpec)
	if !ok {
		return
	}
	s := obj.Spec.(*SchemaSpec)
	if prev.Format != s.Format {
		errs.Add("spec.format", "is immutable once versions are stored (stored %q, got %q)", prev.Format, s.Format)
	}
	for i, v := range s.Versions {
		pv := prev.Version(v.Name)
		if pv == nil || pv.SchemaContent == v.SchemaContent {
			continue
		}
		errs.Add(field(index("spec.versions", i), "schemaContent"),
			"version %s is immutable: stored with hash %s, got %s; add a new version instead",
			v.Name, SchemaContentHash(pv.SchemaContent)[:12], SchemaContentHash(v.SchemaContent)[:12])
	}
}

// schemaBaseURL is where a schema's content is placed for compiling; it
// never resolves to anything (remote references are refused).
const schemaBaseURL = "urn:edgeport:schema"

var schemaPrinter = message.NewPrinter(language.English)

// CompiledSchema is a version's content, checked: the compiled JSON Schema
// (nil for Delta/1.0) and the structural model compatibility works on.
type CompiledSchema = schemaNode

// Validator returns the compiled JSON Schema, or nil for a Delta schema.
func (n *schemaNode) Validator() *jsonschema.Schema { return n.compiled }

// CompileSchemaContent parses and checks content in the given format. A
// JSON Schema must compile against its draft's metaschema; its errors say
// where in the document the problem is.
func CompileSchemaContent(format, content string) (*CompiledSchema, error) {
	var doc any
	dec := json.NewDecoder(strings.NewReader(content))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, jsonSyntaxError(content, err)
	}
	if dec.More() {
		return nil, errors.New("invalid JSON: more than one value")
	}
	switch format {
	case SchemaFormatDelta:
		return compileDelta(doc)
	case SchemaFormatJSONDraft07, SchemaFormatJSON2020:
	default:
		return nil, fmt.Errorf("unknown format %q", format)
	}
	draft, want := jsonschema.Draft7, "draft-07"
	if format == SchemaFormatJSON2020 {
		draft, want = jsonschema.Draft2020, "2020-12"
	}
	if m, ok := doc.(map[string]any); ok {
		if d, ok := m["$schema"].(string); ok && !strings.Contains(d, want) {
			return nil, fmt.Errorf("at /$schema: %q does not match format %s", d, format)
		}
	}
	// jsonschema.UnmarshalJSON keeps numbers exact, as the compiler wants.
	jdoc, err := jsonschema.UnmarshalJSON(strings.NewReader(content))
	if err != nil {
		return nil, jsonSyntaxError(content, err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(draft)
	c.UseLoader(jsonschema.SchemeURLLoader{}) // no loaders: remote $refs are refused
	if err := c.AddResource(schemaBaseURL, jdoc); err != nil {
		return nil, fmt.Errorf("does not compile: %s", cleanSchemaErr(err))
	}
	compiled, err := c.Compile(schemaBaseURL)
	if err != nil {
		return nil, compileError(err)
	}
	n := &schemaNode{compiled: compiled, raw: doc}
	n.fields, n.fieldsErr = n.buildFields()
	return n, nil
}

// compileError turns the compiler's error into one line that says where in
// the schema document the first problem is.
func compileError(err error) error {
	var sve *jsonschema.SchemaValidationError
	if errors.As(err, &sve) {
		var ve *jsonschema.ValidationError
		if errors.As(sve.Err, &ve) {
			for len(ve.Causes) > 0 {
				ve = ve.Causes[0]
			}
			return fmt.Errorf("does not compile: at /%s: %s", strings.Join(ve.InstanceLocation, "/"),
				ve.ErrorKind.LocalizedString(schemaPrinter))
		}
	}
	return fmt.Errorf("does not compile: %s", cleanSchemaErr(err))
}

func cleanSchemaErr(err error) string {
	s := strings.ReplaceAll(err.Error(), schemaBaseURL, "")
	return strings.ReplaceAll(s, `""#`, `"#`)
}

// jsonSyntaxError says where (line:column) content stops being JSON.
func jsonSyntaxError(content string, err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		off := int(se.Offset)
		if off > len(content) {
			off = len(content)
		}
		line := 1 + bytes.Count([]byte(content[:off]), []byte("\n"))
		// Offset counts the bytes read, the offending one included.
		col := off - strings.LastIndexByte(content[:off], '\n') - 1
		if off == 0 {
			col = 1
		}
		return fmt.Errorf("invalid JSON at line %d, column %d: %v", line, col, se)
	}
	return fmt.Errorf("invalid JSON: %w", err)
}
