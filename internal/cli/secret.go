package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/spf13/cobra"
)

// Secrets and config maps are Kubernetes' way to hand credentials and CA
// bundles to resources (secretRef, trustedCaCertificateConfigMapRef,
// trustedClientCaCert). On a single node Edgeport reads them from files in
// the layout of a mounted Kubernetes Secret or ConfigMap:
// <data-dir>/secrets/<name>/<key> and <data-dir>/configmaps/<name>/<key>.
// These commands write that layout, as `kubectl create secret generic`
// and `kubectl create configmap` take their input.

// dataName is a Kubernetes object name (DNS subdomain); keys are the
// characters Kubernetes allows in data keys.
var (
	dataName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)
	dataKey  = regexp.MustCompile(`^[-._a-zA-Z0-9]+$`)
)

func newSecret(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{Use: "secret", Short: "Manage secrets read by secretRef (<data-dir>/secrets/NAME/KEY)"}
	cmd.AddCommand(newDataCreate(stdout, "secret", "secrets", 0o600, 0o700))
	return cmd
}

func newConfigMap(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{Use: "configmap", Aliases: []string{"cm"},
		Short: "Manage config maps read by trustedCaCertificateConfigMapRef and trustedClientCaCert (<data-dir>/configmaps/NAME/KEY)"}
	cmd.AddCommand(newDataCreate(stdout, "configmap", "configmaps", 0o644, 0o755))
	return cmd
}

func newDataCreate(stdout io.Writer, what, sub string, fileMode, dirMode os.FileMode) *cobra.Command {
	var fromFile, fromLiteral []string
	var dataDir string
	var overwrite bool
	cmd := &cobra.Command{
		Use:   "create NAME [--from-file [KEY=]PATH]... [--from-literal KEY=VALUE]...",
		Short: "Create a " + what + " from files and literal values",
		Long: "Writes <data-dir>/" + sub + "/NAME/KEY, one file per key, as Kubernetes mounts a " + what + ".\n" +
			"--from-file PATH uses the file's base name as the key (a directory: each regular file in it);\n" +
			"--from-file KEY=PATH names the key. The running server reads the files when it needs them.",
		Example: "  edgeport " + what + " create mqtt-creds --from-literal username=edge --from-literal password=s3cret\n" +
			"  edgeport " + what + " create " + map[string]string{"secret": "tls-client --from-file tls.crt=client.pem --from-file tls.key=client.key", "configmap": "plant-ca --from-file ca.crt"}[what],
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			name := args[0]
			if !dataName.MatchString(name) || len(name) > 253 {
				return fmt.Errorf("%s name %q: must be lower-case letters, digits, '-' and '.', starting and ending with a letter or digit", what, name)
			}
			data, err := collectData(fromFile, fromLiteral)
			if err != nil {
				return err
			}
			if len(data) == 0 {
				return errors.New("nothing to write: give --from-file or --from-literal")
			}
			dir := filepath.Join(dataDir, sub, name)
			if _, err := os.Stat(dir); err == nil && !overwrite {
				return fmt.Errorf("%s %q already exists (%s); pass --overwrite to replace it", what, name, dir)
			}
			if err := writeData(dir, data, fileMode, dirMode); err != nil {
				return err
			}
			keys := make([]string, 0, len(data))
			for k := range data {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			fmt.Fprintf(stdout, "%s/%s created (%s) in %s\n", what, name, strings.Join(keys, ", "), dir)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&fromFile, "from-file", nil, "[KEY=]PATH: a file (key: its base name, or KEY) or a directory of files")
	f.StringArrayVar(&fromLiteral, "from-literal", nil, "KEY=VALUE")
	f.StringVar(&dataDir, "data-dir", "edgeport-data", "the data directory of the server that reads it")
	f.BoolVar(&overwrite, "overwrite", false, "replace an existing "+what+" (its keys not given are removed)")
	return cmd
}

// collectData reads --from-file and --from-literal into key → content.
func collectData(fromFile, fromLiteral []string) (map[string][]byte, error) {
	data := map[string][]byte{}
	add := func(key string, v []byte, src string) error {
		if !dataKey.MatchString(key) || key == "." || key == ".." {
			return fmt.Errorf("%s: key %q: must be letters, digits, '-', '_' and '.'", src, key)
		}
		if _, dup := data[key]; dup {
			return fmt.Errorf("%s: key %q given twice", src, key)
		}
		data[key] = v
		return nil
	}
	for _, lit := range fromLiteral {
		k, v, ok := strings.Cut(lit, "=")
		if !ok {
			return nil, fmt.Errorf("--from-literal %q: want KEY=VALUE", lit)
		}
		if err := add(k, []byte(v), "--from-literal "+lit); err != nil {
			return nil, err
		}
	}
	for _, spec := range fromFile {
		key, path, named := strings.Cut(spec, "=")
		if !named {
			key, path = "", spec
		}
		fi, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("--from-file %s: %w", spec, err)
		}
		if fi.IsDir() {
			if named {
				return nil, fmt.Errorf("--from-file %s: a directory takes no key", spec)
			}
			ents, err := os.ReadDir(path)
			if err != nil {
				return nil, fmt.Errorf("--from-file %s: %w", spec, err)
			}
			for _, e := range ents {
				if !e.Type().IsRegular() {
					continue
				}
				b, err := os.ReadFile(filepath.Join(path, e.Name()))
				if err != nil {
					return nil, fmt.Errorf("--from-file %s: %w", spec, err)
				}
				if err := add(e.Name(), b, "--from-file "+spec); err != nil {
					return nil, err
				}
			}
			continue
		}
		if key == "" {
			key = filepath.Base(path)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("--from-file %s: %w", spec, err)
		}
		if err := add(key, b, "--from-file "+spec); err != nil {
			return nil, err
		}
	}
	return data, nil
}

// writeData replaces dir with the keys, atomically: the keys are written
// into a fresh sibling directory that takes dir's place by two renames, so
// a server reading the secret sees the old keys, the new ones or (for an
// instant) none, never a mix.
func writeData(dir string, data map[string][]byte, fileMode, dirMode os.FileMode) error {
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, dirMode); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, dirMode); err != nil {
		return err
	}
	for k, v := range data {
		if err := os.WriteFile(filepath.Join(tmp, k), v, fileMode); err != nil {
			return err
		}
	}
	old := tmp + ".old"
	if err := os.Rename(dir, old); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return err
	}
	return os.RemoveAll(old)
}
