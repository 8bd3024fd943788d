package schemaregistry

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/edgeport/edgeport/internal/config"
)

// TestClientRegister registers through Client as a connector does: the
// reference names the schema by its content hash in the edgeport
// namespace, Get reads it back, a second Register of the same content is
// the same reference, and a schema that does not compile is refused with
// the registry's message.
func TestClientRegister(t *testing.T) {
	st, iv := start(t)
	c := &Client{MQTT: iv.c}
	ctx := context.Background()
	content := `{"type": "object", "properties": {"a": {"type": "integer"}}}`
	ref, err := c.Register(ctx, config.SchemaFormatJSONDraft07, content)
	if err != nil {
		t.Fatal(err)
	}
	name := NameFor(content)
	if want := "aio-sr://edgeport/" + name + ":1"; ref != want {
		t.Fatalf("reference %q, want %q", ref, want)
	}
	if r, err := config.ParseSchemaRef(ref); err != nil || r.Name != name || r.Version != "1" {
		t.Fatalf("the reference does not parse as a dataflow's schemaRef: %+v %v", r, err)
	}
	if again, err := c.Register(ctx, config.SchemaFormatJSONDraft07, content); err != nil || again != ref {
		t.Fatalf("second register: %q %v", again, err)
	}
	s, err := c.Get(ctx, name, "1")
	if err != nil || s == nil || s.SchemaContent != content {
		t.Fatalf("get: %+v %v", s, err)
	}
	if s, err := c.Get(ctx, "absent", ""); err != nil || s != nil {
		t.Fatalf("get absent: %+v %v", s, err)
	}
	if _, ok := st.Get(config.Key{Kind: "Schema", Name: name}); !ok {
		t.Fatal("not stored")
	}
	_, err = c.Register(ctx, config.SchemaFormatJSONDraft07, `{"type": "nonsense"}`)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "status 422") {
		t.Fatalf("bad schema: %v", err)
	}
}
