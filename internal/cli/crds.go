package cli

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/crd"
)

func newCRDs(stdout io.Writer) *cobra.Command {
	var out []string
	cmd := &cobra.Command{
		Use:   "crds",
		Short: "Print the Kubernetes CustomResourceDefinitions of every Edgeport kind",
		Long: `Print the CustomResourceDefinitions (edgeport.io/v1) of every Edgeport kind,
generated from the kinds registry, as one multi-document YAML stream; with --out,
write one file per kind into each directory instead (deploy/crds and the Helm
chart's crds/ are generated this way: go generate ./internal/crd).

  edgeport crds | kubectl apply --server-side -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			files, err := crd.Generate(config.Builtin())
			if err != nil {
				return err
			}
			if len(out) == 0 {
				for i, f := range files {
					if i > 0 {
						fmt.Fprintln(stdout, "---")
					}
					if _, err := stdout.Write(f.Data); err != nil {
						return err
					}
				}
				return nil
			}
			for _, dir := range out {
				if err := writeCRDs(dir, files); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&out, "out", nil, "write one file per kind into this directory (repeatable); stale "+crd.Group+"_*.yaml files there are removed")
	return cmd
}

// writeCRDs makes dir hold exactly the generated files among its
// edgeport.io_*.yaml files, leaving other files alone.
func writeCRDs(dir string, files []crd.File) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	want := map[string]bool{}
	for _, f := range files {
		want[f.Name] = true
		p := filepath.Join(dir, f.Name)
		if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, f.Data) {
			continue
		}
		if err := os.WriteFile(p, f.Data, 0o644); err != nil {
			return err
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, crd.Group+"_") && strings.HasSuffix(n, ".yaml") && !want[n] {
			if err := os.Remove(filepath.Join(dir, n)); err != nil {
				return err
			}
		}
	}
	return nil
}
