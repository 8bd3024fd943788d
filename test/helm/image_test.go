package helm

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// The image reference the tests build: no registry serves it, the node
// imports it (pull policy Never).
const (
	testImageRepo = "registry.invalid/edgeport"
	testImageTag  = "e2e"
)

// builtImage is what scripts/build-image.sh printed and wrote.
type builtImage struct {
	dir     string            // its output directory
	index   string            // the multi-platform index's digest
	digests map[string]string // per platform ("linux/amd64"): the image manifest's digest
	sizes   map[string]string // per platform: the compressed size it printed ("21.6 MiB")
}

// dockerArchive is the platform's docker-archive, which `ctr images import` reads.
func (b builtImage) dockerArchive(platform string) string {
	return filepath.Join(b.dir, "image-"+strings.ReplaceAll(platform, "/", "-")+".docker.tar")
}

var (
	indexLine    = regexp.MustCompile(`^` + regexp.QuoteMeta(testImageRepo+":"+testImageTag) + `@(sha256:[0-9a-f]{64})$`)
	platformLine = regexp.MustCompile(`^\s+(\S+/\S+) (sha256:[0-9a-f]{64})\s+([0-9.]+ MiB) compressed`)
)

// imagePlatforms are the platforms the image is built for.
var imagePlatforms = []string{"linux/amd64", "linux/arm64"}

// The commit the images of this test binary describe, read once: the
// script's defaults, pinned so that a commit made while the tests run
// (a developer's) does not change the second build's inputs.
var (
	commitOnce          sync.Once
	commitEpoch, commit string
)

func commitInputs(t *testing.T) (epoch, revision string) {
	t.Helper()
	commitOnce.Do(func() {
		git := func(args ...string) string {
			cmd := exec.Command("git", args...)
			cmd.Dir = repoRoot(t)
			out, err := cmd.Output()
			if err != nil {
				return ""
			}
			return strings.TrimSpace(string(out))
		}
		commitEpoch, commit = git("log", "-1", "--format=%ct"), git("rev-parse", "HEAD")
		if commitEpoch == "" {
			commitEpoch, commit = "0", "unknown" // not a git checkout: the script's own fallbacks
		}
	})
	return commitEpoch, commit
}

// The image built once per test binary for both platforms, shared by the
// reproducibility test (its first build) and the real node (which imports
// the machine's platform): a build links two large binaries, minutes on a
// loaded 2-core machine.
var shared struct {
	mu  sync.Mutex // guards img
	img *builtImage
}

// sharedImageDir holds the shared image until the test binary exits.
var sharedImageDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if sharedImageDir != "" {
		_ = os.RemoveAll(sharedImageDir)
	}
	os.Exit(code)
}

func sharedImage(t *testing.T) builtImage {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.img == nil {
		dir, err := os.MkdirTemp("", "edgeport-image-")
		if err != nil {
			t.Fatal(err)
		}
		sharedImageDir = dir
		img := buildImage(t, filepath.Join(dir, "image"), imagePlatforms...)
		shared.img = &img
	}
	return *shared.img
}

// buildImage runs the image build users run, scripts/build-image.sh, for
// platforms into out: static binaries (go build -trimpath, no VCS stamp)
// and cmd/ociimage. SOURCE_DATE_EPOCH and the revision label are the
// commit's, as the script takes them.
func buildImage(t *testing.T, out string, platforms ...string) builtImage {
	t.Helper()
	epoch, revision := commitInputs(t)
	cmd := exec.CommandContext(t.Context(), "bash", filepath.Join(repoRoot(t), "scripts", "build-image.sh"), out)
	cmd.Dir = repoRoot(t)
	cmd.Env = append(os.Environ(), "IMAGE="+testImageRepo, "VERSION="+testImageTag, "PLATFORMS="+strings.Join(platforms, " "),
		"SOURCE_DATE_EPOCH="+epoch, "REVISION="+revision)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("scripts/build-image.sh: %v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	b := builtImage{dir: out, digests: map[string]string{}, sizes: map[string]string{}}
	for _, l := range strings.Split(stdout.String(), "\n") {
		if m := indexLine.FindStringSubmatch(l); m != nil {
			b.index = m[1]
		}
		if m := platformLine.FindStringSubmatch(l); m != nil {
			b.digests[m[1]], b.sizes[m[1]] = m[2], m[3]
		}
	}
	if b.index == "" || len(b.digests) != len(platforms) {
		t.Fatalf("scripts/build-image.sh printed no digest for each of %v:\n%s", platforms, stdout.String())
	}
	return b
}

func fileDigest(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestImageReproducible builds the real image for both platforms twice,
// into two directories, and expects the same index and image digests and
// byte-identical archives. The second build reuses the Go build cache's
// compiled packages but links both binaries again; the compiled packages
// are keyed by their inputs (scripts/build-image.sh --check with
// CHECK_GOCACHE=<empty dir> proves a build from nothing, see
// docs/kubernetes.md).
func TestImageReproducible(t *testing.T) {
	platforms := imagePlatforms
	a := sharedImage(t)
	b := buildImage(t, filepath.Join(t.TempDir(), "b"), platforms...)
	if a.index != b.index {
		t.Errorf("index digests differ: %s, %s", a.index, b.index)
	}
	for _, p := range platforms {
		if a.digests[p] != b.digests[p] {
			t.Errorf("%s: image digests differ: %s, %s", p, a.digests[p], b.digests[p])
		}
		if da, db := fileDigest(t, a.dockerArchive(p)), fileDigest(t, b.dockerArchive(p)); da != db {
			t.Errorf("%s: docker archives differ", p)
		}
		t.Logf("%s: %s, %s compressed", p, a.digests[p], a.sizes[p])
	}
	if da, db := fileDigest(t, filepath.Join(a.dir, "image-oci.tar")), fileDigest(t, filepath.Join(b.dir, "image-oci.tar")); da != db {
		t.Errorf("the OCI archives differ")
	}
	t.Logf("index %s", a.index)
}
