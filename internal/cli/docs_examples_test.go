package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// docExample is one ```yaml block of a document under docs/.
type docExample struct {
	file string
	line int // of the block's first line
	body string
}

// yamlBlock matches a fenced YAML block; the body is group 1.
var yamlBlock = regexp.MustCompile("(?ms)^```yaml\n(.*?)^```")

// Markers a block may start with, as its first line:
//
//	# fragment: WHY  — a deliberate part of a resource (or Helm values), not applied
//	# rejected: TEXT — a deliberate error example: applying it must fail with TEXT
const (
	fragmentMarker = "# fragment:"
	rejectedMarker = "# rejected:"
)

func docExamples(t *testing.T) []docExample {
	t.Helper()
	files, err := filepath.Glob("../../docs/*.md")
	if err != nil || len(files) == 0 {
		t.Fatalf("no docs found: %v", err)
	}
	var out []docExample
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		for _, m := range yamlBlock.FindAllStringSubmatchIndex(s, -1) {
			out = append(out, docExample{file: filepath.Base(f), line: strings.Count(s[:m[2]], "\n") + 1, body: s[m[2]:m[3]]})
		}
	}
	return out
}

// TestDocsExamplesApply applies every YAML example of docs/*.md, in
// document order and into one server (an example may use what an earlier
// one of its document created), through `edgeport apply -f` against the
// real API, and requires each to be accepted: the docs' examples run as
// written. A block opts out only by saying, on its first line, that it is
// a fragment and why; an error example says which error it shows, and
// must fail with it.
func TestDocsExamplesApply(t *testing.T) {
	url, _ := apiServer(t)
	dir := t.TempDir()
	applied := 0
	for i, ex := range docExamples(t) {
		where := fmt.Sprintf("docs/%s:%d", ex.file, ex.line)
		first, _, _ := strings.Cut(ex.body, "\n")
		first = strings.TrimSpace(first)
		switch {
		case strings.HasPrefix(first, fragmentMarker):
			if strings.TrimSpace(strings.TrimPrefix(first, fragmentMarker)) == "" {
				t.Errorf("%s: a fragment marker must say why the block is not a whole resource", where)
			}
			continue
		case strings.HasPrefix(first, rejectedMarker):
			want := strings.TrimSpace(strings.TrimPrefix(first, rejectedMarker))
			path := filepath.Join(dir, fmt.Sprintf("%d.yaml", i))
			if err := os.WriteFile(path, []byte(ex.body), 0o600); err != nil {
				t.Fatal(err)
			}
			out, errOut, code := runCLI(t, "apply", "-f", path, "--server", url, "--data-dir", dir)
			if code == 0 || !strings.Contains(errOut+out, want) {
				t.Errorf("%s: an error example applied with exit %d, want the error %q:\n%s%s", where, code, want, out, errOut)
			}
			continue
		}
		path := filepath.Join(dir, fmt.Sprintf("%d.yaml", i))
		if err := os.WriteFile(path, []byte(ex.body), 0o600); err != nil {
			t.Fatal(err)
		}
		out, errOut, code := runCLI(t, "apply", "-f", path, "--server", url, "--data-dir", dir)
		if code != 0 {
			t.Errorf("%s: not accepted (exit %d); fix the example, or mark it \"%s WHY\" if it is deliberately a fragment:\n%s%s",
				where, code, fragmentMarker, out, errOut)
			continue
		}
		applied++
	}
	if applied < 10 {
		t.Fatalf("only %d examples applied: is the extraction broken?", applied)
	}
}

// TestSecretAndConfigMapCreate: the commands write the layout that
// secretRef and the config map references read, refuse to replace without
// --overwrite, and replace every key with it.
func TestSecretAndConfigMapCreate(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "plant-ca.pem")
	if err := os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runCLI(t, "secret", "create", "kafka-creds", "--from-literal", "username=edge",
		"--from-literal", "password=s3=cret", "--from-file", "ca.crt="+ca, "--data-dir", dir)
	if code != 0 || !strings.Contains(out, "secret/kafka-creds created (ca.crt, password, username)") {
		t.Fatalf("secret create: exit %d %s%s", code, out, errOut)
	}
	for key, want := range map[string]string{"username": "edge", "password": "s3=cret", "ca.crt": "-----BEGIN CERTIFICATE-----\n"} {
		b, err := os.ReadFile(filepath.Join(dir, "secrets", "kafka-creds", key))
		if err != nil || string(b) != want {
			t.Fatalf("secrets/kafka-creds/%s = %q, %v; want %q", key, b, err, want)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "secrets", "kafka-creds", "password")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret file mode: %v %v", fi.Mode(), err)
	}
	if _, errOut, code := runCLI(t, "secret", "create", "kafka-creds", "--from-literal", "username=x", "--data-dir", dir); code == 0 ||
		!strings.Contains(errOut, "already exists") {
		t.Fatalf("second create: exit %d %s", code, errOut)
	}
	if _, errOut, code := runCLI(t, "secret", "create", "kafka-creds", "--from-literal", "username=x", "--overwrite", "--data-dir", dir); code != 0 {
		t.Fatalf("--overwrite: exit %d %s", code, errOut)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "secrets", "kafka-creds")); len(ents) != 1 {
		t.Fatalf("after --overwrite: %v, want only username", ents)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "secrets")); len(ents) != 1 {
		t.Fatalf("secrets dir holds %v: a temporary directory was left", ents)
	}

	// A directory gives one key per file, as kubectl does.
	out, errOut, code = runCLI(t, "configmap", "create", "client-ca", "--from-file", dir+"/plant-ca.pem", "--data-dir", dir)
	if code != 0 || !strings.Contains(out, "configmap/client-ca created (plant-ca.pem)") {
		t.Fatalf("configmap create: exit %d %s%s", code, out, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, "configmaps", "client-ca", "plant-ca.pem")); err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][]string{
		{"secret", "create", "Bad_Name", "--from-literal", "a=b"},
		{"secret", "create", "ok", "--from-literal", "novalue"},
		{"secret", "create", "ok", "--from-literal", "../x=y"},
		{"secret", "create", "ok"},
	} {
		if _, errOut, code := runCLI(t, append(bad, "--data-dir", dir)...); code == 0 || errOut == "" {
			t.Errorf("%v: exit %d, want an error", bad, code)
		}
	}
}
