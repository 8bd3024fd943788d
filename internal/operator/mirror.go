package operator

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/edgeport/edgeport/internal/config"
)

// Fields of the spec types that name a Secret or a ConfigMap, by json name
// wherever they appear. A Device credential is "name/key": the Secret is
// the part before the slash. trustList may name either. TestRefFieldsKnown
// fails when a spec type gains a field that looks like a reference and is
// in neither list nor in notRefFields.
var (
	secretRefFields = []string{"secretRef", "usernameSecretName", "passwordSecretName", "certificateSecretName",
		"keySecretName", "intermediateCertificatesSecretName", "trustList"}
	configMapRefFields = []string{"trustedCaCert", "trustedClientCaCert", "caCertConfigMap",
		"trustedCaCertificateConfigMapRef", "trustList"}
	// notRefFields look like references and are not: secretName is where
	// cert-manager would write a certificate that Edgeport generates itself.
	notRefFields = []string{"secretName"}
)

// refs are the Secrets and ConfigMaps resources reference.
type refs struct{ secrets, configMaps map[string]bool }

func collectRefs(objs []*config.Object) refs {
	r := refs{secrets: map[string]bool{}, configMaps: map[string]bool{}}
	for _, o := range objs {
		data, err := json.Marshal(o.Spec)
		if err != nil {
			continue
		}
		var v any
		if json.Unmarshal(data, &v) == nil {
			r.walk(v)
		}
	}
	return r
}

func (r refs) walk(v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok && s != "" {
				name, _, _ := strings.Cut(s, "/")
				if slices.Contains(secretRefFields, k) {
					r.secrets[name] = true
				}
				if slices.Contains(configMapRefFields, k) {
					r.configMaps[name] = true
				}
				continue
			}
			r.walk(x)
		}
	case []any:
		for _, x := range v {
			r.walk(x)
		}
	}
}

// mirror writes the referenced Secrets and ConfigMaps of the namespace
// into the data directory, one file per key, where Edgeport on a single
// machine reads them: DataDir/secrets/<name>/<key> and
// DataDir/configmaps/<name>/<key>. A directory is updated the way the
// kubelet updates a mounted Secret: the files of a version are written
// into a fresh hidden directory, a ..data symbolic link is swapped to it
// atomically, and each <key> is a link through ..data; so a reader never
// sees half a rotation (tls.crt of one certificate with tls.key of the
// previous), and the certificate watchers, which compare the files they
// resolve, see every change.
type mirror struct {
	dir string
	ns  string
	c   client.Reader
	log *slog.Logger

	mu      sync.Mutex        // serializes syncs; guards written
	written map[string]string // dir -> hash of the content written there
}

// marker is the file that says a directory is the operator's (so it may
// remove it when nothing references it any more).
const marker = ".edgeport-kubernetes"

func newMirror(dataDir, ns string, c client.Reader, log *slog.Logger) *mirror {
	return &mirror{dir: dataDir, ns: ns, c: c, log: log, written: map[string]string{}}
}

// sync makes the mirrored directories those referenced by the store's
// Kubernetes resources (and extra, about to be applied), with the
// content the API server has.
func (m *mirror) sync(ctx context.Context, store *config.Store, extra ...*config.Object) error {
	if m.dir == "" {
		return nil
	}
	var objs []*config.Object
	for k, src := range store.Keys() {
		if !strings.HasPrefix(src, "kubernetes:") {
			continue
		}
		if o, ok := store.Get(k); ok {
			objs = append(objs, o)
		}
	}
	objs = append(objs, extra...)
	r := collectRefs(objs)

	m.mu.Lock()
	defer m.mu.Unlock()
	want := map[string]bool{}
	var errs []error
	for name := range r.secrets {
		s := &corev1.Secret{}
		err := m.c.Get(ctx, types.NamespacedName{Namespace: m.ns, Name: name}, s)
		if apierrors.IsNotFound(err) {
			continue // the resource reports it missing until it exists
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		d := filepath.Join(m.dir, "secrets", name)
		want[d] = true
		errs = append(errs, m.write(d, s.Data))
	}
	for name := range r.configMaps {
		cm := &corev1.ConfigMap{}
		err := m.c.Get(ctx, types.NamespacedName{Namespace: m.ns, Name: name}, cm)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		files := map[string][]byte{}
		for k, v := range cm.Data {
			files[k] = []byte(v)
		}
		maps.Copy(files, cm.BinaryData)
		d := filepath.Join(m.dir, "configmaps", name)
		want[d] = true
		errs = append(errs, m.write(d, files))
	}
	// What is no longer referenced (or no longer exists) goes.
	for _, sub := range []string{"secrets", "configmaps"} {
		ents, err := os.ReadDir(filepath.Join(m.dir, sub))
		if err != nil {
			continue
		}
		for _, e := range ents {
			d := filepath.Join(m.dir, sub, e.Name())
			if want[d] {
				continue
			}
			if _, err := os.Stat(filepath.Join(d, marker)); err != nil {
				continue // not ours: a directory put there by hand
			}
			if err := os.RemoveAll(d); err != nil {
				errs = append(errs, err)
				continue
			}
			delete(m.written, d)
			m.log.Info("removed a Secret or ConfigMap no resource references", "dir", d)
		}
	}
	return errors.Join(errs...)
}

// write makes dir hold files, atomically, unless it already does.
func (m *mirror) write(dir string, files map[string][]byte) error {
	h := sha256.New()
	keys := slices.Sorted(maps.Keys(files))
	for _, k := range keys {
		fmt.Fprintf(h, "%d:%s%d:", len(k), k, len(files[k]))
		h.Write(files[k])
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if m.written[dir] == sum {
		if _, err := os.Stat(filepath.Join(dir, "..data")); err == nil {
			return nil
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, marker), nil, 0o600); err != nil {
		return err
	}
	var rb [6]byte
	_, _ = rand.Read(rb[:])
	version := "..v" + hex.EncodeToString(rb[:])
	vdir := filepath.Join(dir, version)
	if err := os.Mkdir(vdir, 0o700); err != nil {
		return err
	}
	for _, k := range keys {
		// Kubernetes allows [-._a-zA-Z0-9]+ as keys; ".", ".." and our own
		// hidden names are refused here too.
		if !validKey(k) {
			m.log.Warn("key not written: not a file name", "dir", dir, "key", k)
			continue
		}
		if err := os.WriteFile(filepath.Join(vdir, k), files[k], 0o600); err != nil {
			return err
		}
	}
	tmp := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(version, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		return err
	}
	// Links for new keys, removal of gone ones and of older versions.
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if !validKey(k) {
			continue
		}
		link := filepath.Join(dir, k)
		if t, err := os.Readlink(link); err == nil && t == filepath.Join("..data", k) {
			continue
		}
		_ = os.Remove(link)
		if err := os.Symlink(filepath.Join("..data", k), link); err != nil {
			return err
		}
	}
	for _, e := range ents {
		n := e.Name()
		switch {
		case n == marker || n == "..data" || n == version:
		case strings.HasPrefix(n, "..v"):
			_ = os.RemoveAll(filepath.Join(dir, n))
		case e.Type()&fs.ModeSymlink != 0 && !slices.Contains(keys, n):
			_ = os.Remove(filepath.Join(dir, n))
		}
	}
	m.written[dir] = sum
	return nil
}

func validKey(k string) bool {
	if k == "" || k == "." || strings.HasPrefix(k, "..") || k == marker || len(k) > 253 {
		return false
	}
	for _, r := range k {
		if !(r == '-' || r == '.' || r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}
