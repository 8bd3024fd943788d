package portal

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"

	"github.com/edgeport/edgeport/internal/config"
)

// Redacted replaces secret values in the support bundle.
const Redacted = "REDACTED"

// secretKey reports whether a resource field of that name holds a secret:
// passwords and their hashes, tokens, private keys, credentials and
// header values (which carry authorization). References to secrets
// (secretRef, passwordFile) name where a secret is and are kept.
func secretKey(k string) bool {
	l := strings.ToLower(k)
	if strings.HasSuffix(l, "ref") || strings.HasSuffix(l, "file") || strings.HasSuffix(l, "name") {
		return false
	}
	for _, s := range []string{"password", "secret", "token", "privatekey", "credential", "apikey"} {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// redact replaces the values of secret fields in a decoded JSON document.
func redact(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			switch _, nested := x.(map[string]any); {
			case strings.EqualFold(k, "headers"):
				t[k] = redactAll(x) // header values carry authorization
			case secretKey(k) && !nested:
				t[k] = redactAll(x)
			default:
				// A settings object named after a secret
				// (usernamePasswordSettings) is judged field by field.
				t[k] = redact(x)
			}
		}
	case []any:
		for i := range t {
			t[i] = redact(t[i])
		}
	}
	return v
}

// redactAll replaces every scalar under v (a header map keeps its names).
func redactAll(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			t[k] = redactAll(x)
		}
		return t
	case []any:
		for i := range t {
			t[i] = redactAll(t[i])
		}
		return t
	case nil:
		return nil
	}
	return Redacted
}

// redactedYAML renders objects as one YAML stream with secrets redacted.
func redactedYAML(objs []*config.Object) ([]byte, error) {
	var out bytes.Buffer
	for i, o := range objs {
		data, err := json.Marshal(o)
		if err != nil {
			return nil, err
		}
		var doc any
		if err := json.Unmarshal(data, &doc); err != nil {
			return nil, err
		}
		if data, err = json.Marshal(redact(doc)); err != nil {
			return nil, err
		}
		y, err := config.JSONToYAML(data)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			out.WriteString("---\n")
		}
		out.Write(y)
	}
	return out.Bytes(), nil
}

// allObjects lists every resource of every kind.
func (p *Portal) allObjects() []*config.Object {
	var objs []*config.Object
	if p.opts.Resources == nil {
		return nil
	}
	for _, d := range p.opts.Resources.Kinds().All() {
		objs = append(objs, p.opts.Resources.List(d.Kind, config.Selector{})...)
	}
	return objs
}

// writeBundle writes the support bundle, a zip archive: the recent log,
// the resources with secrets redacted, a metrics snapshot, the status,
// the sessions and the check report. A part that fails is replaced by a
// file saying why; the rest is still written.
func (p *Portal) writeBundle(ctx context.Context, w io.Writer, now time.Time) error {
	zw := zip.NewWriter(w)
	add := func(name string, fill func(io.Writer) error) {
		f, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Deflate, Modified: now})
		if err != nil {
			return
		}
		if err := fill(f); err != nil {
			ef, cerr := zw.CreateHeader(&zip.FileHeader{Name: name + ".error.txt", Method: zip.Deflate, Modified: now})
			if cerr == nil {
				fmt.Fprintf(ef, "%s could not be written completely: %v\n", name, err)
			}
			p.log.Warn("support bundle: part failed", "part", name, "err", err)
		}
	}
	st := p.status()
	add("README.txt", func(w io.Writer) error {
		_, err := fmt.Fprintf(w, "Edgeport support bundle\nversion: %s\ncreated: %s\n\n"+
			"logs.jsonl       recent log lines (the in-memory ring, oldest first)\n"+
			"resources.yaml   every resource, secrets replaced by %s\n"+
			"metrics.txt      Prometheus metrics snapshot\n"+
			"status.json      the /statusz document\n"+
			"sessions.json    MQTT sessions (no payloads)\n"+
			"check.json       the edgeport check report\n", st.Version, now.UTC().Format(time.RFC3339), Redacted)
		return err
	})
	add("logs.jsonl", func(w io.Writer) error {
		if p.opts.Logs == nil {
			return nil
		}
		enc := json.NewEncoder(w)
		for _, l := range p.opts.Logs.Lines(slog.LevelDebug, 0) {
			if err := enc.Encode(l); err != nil {
				return err
			}
		}
		return nil
	})
	add("resources.yaml", func(w io.Writer) error {
		y, err := redactedYAML(p.allObjects())
		if err != nil {
			return err
		}
		_, err = w.Write(y)
		return err
	})
	add("metrics.txt", func(w io.Writer) error {
		if p.opts.Gatherer == nil {
			return nil
		}
		mfs, err := p.opts.Gatherer.Gather()
		enc := expfmt.NewEncoder(w, expfmt.NewFormat(expfmt.TypeTextPlain))
		for _, mf := range mfs {
			if eerr := enc.Encode(mf); eerr != nil {
				return eerr
			}
		}
		return err
	})
	add("status.json", func(w io.Writer) error { return writeIndented(w, st) })
	add("sessions.json", func(w io.Writer) error {
		if p.opts.Broker == nil {
			return nil
		}
		return writeIndented(w, p.opts.Broker.Sessions())
	})
	add("check.json", func(w io.Writer) error {
		if p.opts.Check == nil {
			return fmt.Errorf("no check is available in this build")
		}
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		rep, err := p.opts.Check(cctx)
		if err != nil {
			return err
		}
		_, err = w.Write(rep)
		return err
	})
	return zw.Close()
}

func writeIndented(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
