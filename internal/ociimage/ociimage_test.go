package ociimage

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var epoch = time.Unix(1767225600, 0).UTC() // 2026-01-01

func fakeBinaries(t *testing.T) []Platform {
	t.Helper()
	dir := t.TempDir()
	var ps []Platform
	for _, arch := range []string{"amd64", "arm64"} {
		p := filepath.Join(dir, "edgeport-"+arch)
		// The builder copies bytes; whether they run is the script's
		// business (it builds real static binaries).
		if err := os.WriteFile(p, []byte("\x7fELF fake edgeport for "+arch), 0o755); err != nil {
			t.Fatal(err)
		}
		ps = append(ps, Platform{OS: "linux", Arch: arch, Binary: p})
	}
	return ps
}

func testOptions(t *testing.T) Options {
	return Options{
		Platforms:    fakeBinaries(t),
		Created:      epoch,
		Labels:       map[string]string{"org.opencontainers.image.title": "edgeport"},
		Cmd:          []string{"serve"},
		ExposedPorts: []string{"1883/tcp"},
	}
}

// TestReproducible builds the same inputs twice, with the file system
// metadata of the inputs changed in between, and expects the same digest
// and byte-identical outputs.
func TestReproducible(t *testing.T) {
	opts := testOptions(t)
	build := func() (string, string) {
		idx, err := Build(opts)
		if err != nil {
			t.Fatal(err)
		}
		d, err := idx.Digest()
		if err != nil {
			t.Fatal(err)
		}
		out := t.TempDir()
		if err := WriteLayout(filepath.Join(out, "oci"), idx, "example.invalid/edgeport:test"); err != nil {
			t.Fatal(err)
		}
		if err := WriteOCIArchive(filepath.Join(out, "oci"), filepath.Join(out, "oci.tar"), opts.Created); err != nil {
			t.Fatal(err)
		}
		if err := WriteDockerArchive(idx, "linux", "arm64", "example.invalid/edgeport:test", filepath.Join(out, "docker.tar")); err != nil {
			t.Fatal(err)
		}
		return d.String(), out
	}
	d1, out1 := build()
	// A later mtime and another mode on the inputs must not leak in.
	for _, p := range opts.Platforms {
		if err := os.Chtimes(p.Binary, time.Now(), time.Now()); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p.Binary, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	d2, out2 := build()
	if d1 != d2 {
		t.Fatalf("digests differ: %s, %s", d1, d2)
	}
	for _, f := range []string{"oci.tar", "docker.tar"} {
		a, _ := os.ReadFile(filepath.Join(out1, f))
		b, _ := os.ReadFile(filepath.Join(out2, f))
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Errorf("%s differs between builds (%d and %d bytes)", f, len(a), len(b))
		}
	}

	// The time is an input: another SOURCE_DATE_EPOCH is another image.
	opts.Created = epoch.Add(time.Hour)
	if d3, _ := build(); d3 == d1 {
		t.Error("a different Created gave the same digest")
	}
}

// TestImageContents reads back what each platform's image holds: the
// binary root-owned and executable, a data directory owned by uid 65532,
// no shell, and a config running as 65532.
func TestImageContents(t *testing.T) {
	opts := testOptions(t)
	idx, err := Build(opts)
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 2 || m.MediaType != "application/vnd.oci.image.index.v1+json" {
		t.Fatalf("index: %d manifests, media type %s", len(m.Manifests), m.MediaType)
	}
	for _, p := range opts.Platforms {
		img, err := Select(idx, p.OS, p.Arch)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.Architecture != p.Arch || cf.OS != "linux" || cf.Config.User != "65532:65532" ||
			len(cf.Config.Entrypoint) != 1 || cf.Config.Entrypoint[0] != BinaryPath || !cf.Created.Time.Equal(epoch) {
			t.Errorf("%s config: arch %s os %s user %q entrypoint %v created %v", p.Arch, cf.Architecture, cf.OS,
				cf.Config.User, cf.Config.Entrypoint, cf.Created)
		}
		layers, err := img.Layers()
		if err != nil || len(layers) != 1 {
			t.Fatalf("%s: %d layers, %v", p.Arch, len(layers), err)
		}
		rc, err := layers[0].Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		files := map[string]*tar.Header{}
		var bin []byte
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			files[strings.TrimSuffix(h.Name, "/")] = h
			if h.Name == "usr/local/bin/edgeport" {
				bin, _ = io.ReadAll(tr)
			}
			if !h.ModTime.Equal(epoch) || h.Uname != "" || h.Gname != "" {
				t.Errorf("%s: mtime %v, owner names %q %q", h.Name, h.ModTime, h.Uname, h.Gname)
			}
		}
		rc.Close()
		want, _ := os.ReadFile(p.Binary)
		if !bytes.Equal(bin, want) {
			t.Errorf("%s: the binary in the image is not the input", p.Arch)
		}
		if h := files["usr/local/bin/edgeport"]; h == nil || h.Mode != 0o755 || h.Uid != 0 {
			t.Errorf("binary entry %+v", h)
		}
		if h := files["var/lib/edgeport"]; h == nil || h.Typeflag != tar.TypeDir || h.Uid != UID || h.Gid != GID {
			t.Errorf("data dir entry %+v", h)
		}
		for _, sh := range []string{"bin/sh", "bin/bash", "bin/busybox"} {
			if files[sh] != nil {
				t.Errorf("the image has a shell: %s", sh)
			}
		}
	}
}

// TestReadBySkopeo has skopeo, an independent OCI implementation, read the
// layout and the archives, so the format is checked by more than our own
// library.
func TestReadBySkopeo(t *testing.T) {
	skopeo, err := exec.LookPath("skopeo")
	if err != nil {
		t.Fatalf("skopeo not installed (scripts/test.sh installs it): %v", err)
	}
	idx, err := Build(testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	layoutDir := filepath.Join(out, "oci")
	if err := WriteLayout(layoutDir, idx, "test"); err != nil {
		t.Fatal(err)
	}
	if err := WriteOCIArchive(layoutDir, filepath.Join(out, "oci.tar"), epoch); err != nil {
		t.Fatal(err)
	}
	if err := WriteDockerArchive(idx, "linux", "amd64", "example.invalid/edgeport:test", filepath.Join(out, "docker.tar")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ ref, arch string }{
		{"oci:" + layoutDir + ":test", "arm64"},
		{"oci-archive:" + filepath.Join(out, "oci.tar") + ":test", "amd64"},
		{"docker-archive:" + filepath.Join(out, "docker.tar"), "amd64"},
	} {
		cmd := exec.CommandContext(t.Context(), skopeo, "--override-os", "linux", "--override-arch", tc.arch, "inspect", "--config", tc.ref)
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("skopeo inspect %s: %v\n%s", tc.ref, err, b)
		}
		var cfg struct {
			Architecture string `json:"architecture"`
			Config       struct {
				User string `json:"User"`
			} `json:"config"`
		}
		if err := json.Unmarshal(b, &cfg); err != nil {
			t.Fatalf("%s: %v\n%s", tc.ref, err, b)
		}
		if cfg.Architecture != tc.arch || cfg.Config.User != "65532:65532" {
			t.Errorf("%s: skopeo read arch %s user %q", tc.ref, cfg.Architecture, cfg.Config.User)
		}
	}
	// Copying verifies every blob's digest on the way.
	cmd := exec.CommandContext(t.Context(), skopeo, "copy", "--all", "oci:"+layoutDir+":test", "oci:"+filepath.Join(out, "copy")+":test")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("skopeo copy --all: %v\n%s", err, b)
	}
}
