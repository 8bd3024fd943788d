package config

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeport/edgeport/internal/testwait"
)

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func port(t *testing.T, s *Store, name string) int {
	t.Helper()
	o, ok := s.Get(Key{"BrokerListener", name})
	if !ok {
		return -1
	}
	return *o.Spec.(*BrokerListenerSpec).Ports[0].Port
}

func TestDirSync(t *testing.T) {
	cfg := t.TempDir()
	s := NewStore(Builtin(), t.TempDir(), nil)
	d, err := NewDir(cfg, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := filepath.Join(cfg, "a.yaml")
	write(t, a, listenerDoc("one", 1001, "")+"---\n"+listenerDoc("two", 1002, ""))
	write(t, filepath.Join(cfg, "b.yml"), listenerDoc("three", 1003, ""))
	write(t, filepath.Join(cfg, ".hidden.yaml"), listenerDoc("hidden", 1, ""))
	write(t, filepath.Join(cfg, "notes.txt"), "not yaml")
	if p := d.Sync(); len(p) != 0 {
		t.Fatalf("problems: %v", p)
	}
	for name, want := range map[string]int{"one": 1001, "two": 1002, "three": 1003, "hidden": -1} {
		if got := port(t, s, name); got != want {
			t.Errorf("%s: port %d, want %d", name, got, want)
		}
	}
	if o, _ := s.Get(Key{"BrokerListener", "one"}); o.Metadata.Annotations[AnnotationConfigFile] != a {
		t.Fatalf("source annotation %v", o.Metadata.Annotations)
	}

	// An invalid document is reported with file, line and path; its
	// resource keeps the last good version. The valid one is applied.
	write(t, a, listenerDoc("one", 1011, "")+"---\n"+strings.Replace(listenerDoc("two", 1012, ""), "port: 1012", "port: 99999", 1))
	p := d.Sync()
	if len(p) != 1 || p[0].File != a || p[0].Line != 17 || p[0].Resource != "BrokerListener/two" ||
		p[0].Message != "spec.ports[0].port: must be between 0 and 65535 (0 picks a free port)" {
		t.Fatalf("problems: %+v", p)
	}
	if port(t, s, "one") != 1011 || port(t, s, "two") != 1002 {
		t.Fatalf("ports %d %d", port(t, s, "one"), port(t, s, "two"))
	}
	if evs, _ := s.Events(Key{"BrokerListener", "two"}); evs[len(evs)-1].Reason != "InvalidConfig" {
		t.Fatalf("no InvalidConfig event: %+v", evs)
	}
	// A syntax error keeps every resource of the file.
	write(t, a, "apiVersion: [\n")
	if p := d.Sync(); len(p) != 1 || port(t, s, "one") != 1011 || port(t, s, "two") != 1002 {
		t.Fatalf("after syntax error: %v, ports %d %d", p, port(t, s, "one"), port(t, s, "two"))
	}
	// The API cannot change what the directory defines.
	if _, _, err := s.Apply(mustDecode(t, listenerDoc("three", 2000, "")), ApplyOptions{}); err == nil {
		t.Fatal("API changed a config-dir resource")
	}
	// A duplicate across files keeps the first file's definition.
	write(t, filepath.Join(cfg, "c.yaml"), listenerDoc("three", 3333, ""))
	if p := d.Sync(); len(p) != 2 || !strings.Contains(p[1].Message, "already defined in") || port(t, s, "three") != 1003 {
		t.Fatalf("duplicate: %v, port %d", p, port(t, s, "three"))
	}
	// Removing a file deletes its resources; a definition can move files.
	if err := os.Remove(filepath.Join(cfg, "b.yml")); err != nil {
		t.Fatal(err)
	}
	write(t, a, listenerDoc("one", 1011, ""))
	if p := d.Sync(); len(p) != 0 {
		t.Fatalf("problems: %v", p)
	}
	if port(t, s, "two") != -1 || port(t, s, "three") != 3333 {
		t.Fatalf("after removal: two %d three %d", port(t, s, "two"), port(t, s, "three"))
	}
}

func TestDirWatch(t *testing.T) {
	cfg := t.TempDir()
	s := NewStore(Builtin(), "", nil)
	d, err := NewDir(cfg, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Watch(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	f := filepath.Join(cfg, "l.yaml")
	// Editors write a temporary file and rename it over the original.
	for _, p := range []int{1883, 1884} {
		tmp := filepath.Join(cfg, ".l.yaml.swp")
		write(t, tmp, listenerDoc("w", p, ""))
		if err := os.Rename(tmp, f); err != nil {
			t.Fatal(err)
		}
		testwait.For(t, "the watched directory to apply the change", func() bool { return port(t, s, "w") == p })
	}
	if err := os.Remove(f); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "the watched directory to apply the change", func() bool { return port(t, s, "w") == -1 })
}

func TestNewDirErrors(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	write(t, f, "")
	for _, p := range []string{f, filepath.Join(t.TempDir(), "missing")} {
		if _, err := NewDir(p, NewStore(Builtin(), "", nil), nil); err == nil {
			t.Errorf("NewDir(%s) succeeded", p)
		}
	}
}
