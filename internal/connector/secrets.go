package connector

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Secrets reads secret references: "name/key" is the file
// <dir>/name/key, "name" the file <dir>/name (the layout of a Kubernetes
// secret mounted as files). The registry validates references, so a
// reference cannot leave dir.
type Secrets struct {
	Dir string
}

// Read returns a secret's content, without a trailing newline.
func (s Secrets) Read(ref string) ([]byte, error) {
	if s.Dir == "" {
		return nil, fmt.Errorf("reading secret %q: no secrets directory", ref)
	}
	clean := filepath.Clean(filepath.FromSlash(ref))
	if ref == "" || filepath.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, ".."+string(filepath.Separator)) {
		return nil, fmt.Errorf("reading secret %q: not a secret reference", ref)
	}
	b, err := os.ReadFile(filepath.Join(s.Dir, clean))
	if err != nil {
		return nil, fmt.Errorf("reading secret %q: %w", ref, err)
	}
	return []byte(strings.TrimRight(string(b), "\r\n")), nil
}
