package dataflow

import (
	"fmt"
	"sync"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/dataflow/stage"
)

// PlanSchema is a flow's schemaRef resolved to the stored version. Its
// hash is part of the plan's identity, so a flow restarts when what it
// names changes (a deleted and re-created schema).
type PlanSchema struct {
	Ref     string // as written
	Name    string
	Version string
	Format  string
	Hash    string

	compiled *config.CompiledSchema
}

// Compiled returns the checked schema version.
func (s *PlanSchema) Compiled() *config.CompiledSchema { return s.compiled }

// resolveSchemas fills the plan's schemas from the stored Schema
// resources; a reference that names nothing is the plan's error (the flow
// reports InvalidReference), since the Schema can be deleted after the
// flow was applied.
func (p *Plan) resolveSchemas(schemas map[string]*config.Object) []error {
	var errs []error
	lookup := func(k config.Key) (*config.Object, bool) { o, ok := schemas[k.Name]; return o, ok }
	for _, u := range p.Spec.SchemaRefs() {
		o, v, r, err := config.ResolveSchemaRef(u.Ref, lookup)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s schemaRef %s: %w", u.Role, u.Ref, err))
			continue
		}
		spec := o.Spec.(*config.SchemaSpec)
		c, err := config.CompileSchemaContent(spec.Format, v.SchemaContent)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s schemaRef %s: %w", u.Role, u.Ref, err))
			continue
		}
		ps := &PlanSchema{Ref: u.Ref, Name: r.Name, Version: r.Version, Format: spec.Format,
			Hash: config.SchemaContentHash(v.SchemaContent), compiled: c}
		switch u.Role {
		case config.SchemaRoleSource:
			p.SourceSchema = ps
		case config.SchemaRoleOutput:
			p.OutputSchema = ps
		}
	}
	return errs
}

// SchemaError is a message that failed its flow's schema: the schema's
// reference, whether it checked the source's message or the
// transformation's output, and the validation error (instance path and
// keyword).
type SchemaError struct {
	Role string // config.SchemaRoleSource or config.SchemaRoleOutput
	Ref  string
	Err  error
}

func (e *SchemaError) Error() string {
	what := "message"
	if e.Role == config.SchemaRoleOutput {
		what = "transformed message"
	}
	return fmt.Sprintf("%s does not match schema %s: %v", what, e.Ref, e.Err)
}

func (e *SchemaError) Unwrap() error { return e.Err }

// schemaCounters count one schema version's validations in one flow.
type schemaCounters struct {
	name, version string
	validations   counter
	failures      counter
}

// schemaCheck validates messages against one schema version and counts.
type schemaCheck struct {
	role string
	s    *PlanSchema
	c    *schemaCounters
}

func (k *schemaCheck) check(m *stage.Message) error {
	k.c.validations.Inc()
	if err := k.s.compiled.ValidateMessage(m.Payload); err != nil {
		k.c.failures.Inc()
		return &SchemaError{Role: k.role, Ref: k.s.Ref, Err: err}
	}
	return nil
}

// schemaMetrics are a flow's validation counters by schema version; they
// outlive the flow's restarts, as its other counters do.
type schemaMetrics struct {
	mu sync.Mutex // guards by
	by map[[2]string]*schemaCounters
}

func (s *schemaMetrics) counters(name, version string) *schemaCounters {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := [2]string{name, version}
	c := s.by[k]
	if c == nil {
		if s.by == nil {
			s.by = map[[2]string]*schemaCounters{}
		}
		c = &schemaCounters{name: name, version: version}
		s.by[k] = c
	}
	return c
}

func (s *schemaMetrics) snapshot() []*schemaCounters {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*schemaCounters, 0, len(s.by))
	for _, c := range s.by {
		out = append(out, c)
	}
	return out
}

// checks returns the plan's source and output checks (nil when absent).
func (m *flowMetrics) checks(p *Plan) (in, out *schemaCheck) {
	if s := p.SourceSchema; s != nil {
		in = &schemaCheck{role: config.SchemaRoleSource, s: s, c: m.schemas.counters(s.Name, s.Version)}
	}
	if s := p.OutputSchema; s != nil {
		out = &schemaCheck{role: config.SchemaRoleOutput, s: s, c: m.schemas.counters(s.Name, s.Version)}
	}
	return in, out
}
