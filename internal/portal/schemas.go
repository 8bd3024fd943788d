package portal

import (
	"net/http"
	"slices"
	"strings"

	"github.com/edgeport/edgeport/internal/config"
)

// schemaDoc is one Schema as the schemas page shows it: its versions with
// content, what uses it (status.usedBy: dataflows by schemaRef, asset
// datasets whose connector registered it, with their topics) and the
// validations counted per version and dataflow.
type schemaDoc struct {
	Name          string             `json:"name"`
	DisplayName   string             `json:"displayName,omitempty"`
	Description   string             `json:"description,omitempty"`
	Format        string             `json:"format"`
	Compatibility string             `json:"compatibility"`
	RegisteredBy  string             `json:"registeredBy,omitempty"` // "mqtt": put through the registry API
	Versions      []schemaVersionDoc `json:"versions"`
	UsedBy        []config.SchemaUse `json:"usedBy"`
	Validations   []schemaCount      `json:"validations"`
}

type schemaVersionDoc struct {
	Name    string `json:"name"`
	Hash    string `json:"hash"`
	Content string `json:"content"`
}

// schemaCount is the metrics of one schema version in one dataflow.
type schemaCount struct {
	Version     string  `json:"version"`
	Dataflow    string  `json:"dataflow"`
	Validations float64 `json:"validations"`
	Failures    float64 `json:"failures"`
}

// schemas serves GET /ui/schemas.
func (p *Portal) schemas(w http.ResponseWriter, r *http.Request, _ *login) {
	out := []schemaDoc{}
	if p.opts.Resources == nil {
		writeJSON(w, http.StatusOK, out)
		return
	}
	counts := p.schemaCounts()
	for _, o := range p.opts.Resources.List("Schema", config.Selector{}) {
		spec := o.Spec.(*config.SchemaSpec)
		d := schemaDoc{Name: o.Metadata.Name, DisplayName: spec.DisplayName, Description: spec.Description, Format: spec.Format,
			Compatibility: spec.Compatibility, RegisteredBy: o.Metadata.Labels["edgeport.io/registered-by"],
			UsedBy: []config.SchemaUse{}, Validations: []schemaCount{}}
		for _, v := range spec.Versions {
			d.Versions = append(d.Versions, schemaVersionDoc{Name: v.Name, Hash: config.SchemaContentHash(v.SchemaContent), Content: v.SchemaContent})
		}
		if o.Status != nil && o.Status.UsedBy != nil {
			d.UsedBy = o.Status.UsedBy
		}
		if c := counts[d.Name]; c != nil {
			d.Validations = c
		}
		out = append(out, d)
	}
	writeJSON(w, http.StatusOK, out)
}

// schemaCounts reads edgeport_schema_validations_total and
// _validation_failures_total from the metrics registry, by schema.
func (p *Portal) schemaCounts() map[string][]schemaCount {
	out := map[string][]schemaCount{}
	if p.opts.Gatherer == nil {
		return out
	}
	mfs, err := p.opts.Gatherer.Gather()
	if err != nil {
		p.log.Debug("portal: gathering metrics", "err", err)
	}
	type key struct{ schema, version, flow string }
	byKey := map[key]*schemaCount{}
	for _, mf := range mfs {
		failures := false
		switch mf.GetName() {
		case "edgeport_schema_validations_total":
		case "edgeport_schema_validation_failures_total":
			failures = true
		default:
			continue
		}
		for _, m := range mf.GetMetric() {
			var k key
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "schema":
					k.schema = l.GetValue()
				case "version":
					k.version = l.GetValue()
				case "dataflow":
					k.flow = l.GetValue()
				}
			}
			c := byKey[k]
			if c == nil {
				c = &schemaCount{Version: k.version, Dataflow: k.flow}
				byKey[k] = c
			}
			if failures {
				c.Failures = m.GetCounter().GetValue()
			} else {
				c.Validations = m.GetCounter().GetValue()
			}
		}
	}
	for k, c := range byKey {
		out[k.schema] = append(out[k.schema], *c)
	}
	for _, cs := range out {
		slices.SortFunc(cs, func(a, b schemaCount) int {
			if c := strings.Compare(a.Dataflow, b.Dataflow); c != 0 {
				return c
			}
			return strings.Compare(a.Version, b.Version)
		})
	}
	return out
}
