package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/edgeport/edgeport/internal/api"
	"github.com/edgeport/edgeport/internal/config"
)

func newApply(stdout, stderr io.Writer) *cobra.Command {
	var cf clientFlags
	var files []string
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR|-",
		Short: "Create or replace resources from YAML files",
		Long: `Create or replace the resources of YAML (or JSON) files through the REST API,
like kubectl apply. -f takes a file, a directory (its *.yaml, *.yml and *.json
files, not subdirectories) or - for standard input, and may be repeated. Each
resource prints created, configured or unchanged; invalid ones print every
problem with its field path, and the exit status is 1.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return fmt.Errorf("-f: required (a file, a directory or -)")
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			sources, err := readSources(files, cmd.InOrStdin())
			if err != nil {
				return err
			}
			failed := false
			for _, src := range sources {
				if !applySource(cmd.Context(), c, src, dryRun, stdout, stderr) {
					failed = true
				}
			}
			if failed {
				return exitError(1)
			}
			return nil
		},
	}
	cf.add(cmd)
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "file, directory or - (standard input)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "validate and report what would happen, changing nothing")
	return cmd
}

type source struct {
	name string
	data []byte
}

// readSources expands -f arguments into file contents.
func readSources(args []string, stdin io.Reader) ([]source, error) {
	var out []source
	for _, a := range args {
		if a == "-" {
			data, err := io.ReadAll(stdin)
			if err != nil {
				return nil, fmt.Errorf("reading standard input: %w", err)
			}
			out = append(out, source{"<stdin>", data})
			continue
		}
		fi, err := os.Stat(a)
		if err != nil {
			return nil, fmt.Errorf("-f: %w", err)
		}
		paths := []string{a}
		if fi.IsDir() {
			paths = nil
			ents, err := os.ReadDir(a)
			if err != nil {
				return nil, fmt.Errorf("-f: %w", err)
			}
			for _, e := range ents {
				n := e.Name()
				if !e.IsDir() && !strings.HasPrefix(n, ".") &&
					(strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml") || strings.HasSuffix(n, ".json")) {
					paths = append(paths, filepath.Join(a, n))
				}
			}
			slices.Sort(paths)
			if len(paths) == 0 {
				return nil, fmt.Errorf("-f: no *.yaml, *.yml or *.json files in %s", a)
			}
		}
		for _, p := range paths {
			data, err := os.ReadFile(p)
			if err != nil {
				return nil, fmt.Errorf("-f: %w", err)
			}
			out = append(out, source{p, data})
		}
	}
	return out, nil
}

// applySource applies each document of one file; it reports whether all
// of them succeeded. Each document is first decoded here, from the file
// itself, so that problems and warnings name the file and line; a
// document that is invalid is not sent.
func applySource(ctx context.Context, c *apiClient, src source, dryRun bool, stdout, stderr io.Writer) bool {
	docs, splitErr := config.SplitDocuments(src.data)
	local, _ := c.kinds.DecodeAll(src.data) // the same documents, with their lines in the file
	ok := true
	// Schemas first: a Dataflow's schemaRef is checked when it is applied.
	order := make([]int, len(docs))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		ka, _ := config.Identify(docs[a])
		kb, _ := config.Identify(docs[b])
		return config.ApplyRank(canonicalKind(c.kinds, ka)) - config.ApplyRank(canonicalKind(c.kinds, kb))
	})
	for _, i := range order {
		doc := docs[i]
		kind, name := config.Identify(doc)
		at := fmt.Sprintf("%s: document %d", src.name, i+1)
		var ld *config.Document
		if i < len(local) {
			ld = &local[i]
			at = fmt.Sprintf("%s:%d", src.name, ld.Line)
		}
		def := c.kinds.LookupKind(kind)
		if def == nil {
			fmt.Fprintf(stderr, "error: %s: kind %q is not one of %s\n", at, kind, strings.Join(c.kinds.Names(), ", "))
			ok = false
			continue
		}
		where := at
		method, path := http.MethodPut, "/"+def.Plural+"/"+name
		if name == "" || strings.ContainsAny(name, "/?#%") {
			// Let the server report the name's problem with the others.
			method, path = http.MethodPost, "/"+def.Plural
		} else {
			where = at + ": " + ref(def, name)
		}
		var ve *config.ValidationError
		if ld != nil && errors.As(ld.Err, &ve) {
			fmt.Fprintf(stderr, "error: %s: %s\n", where, ve.Summary())
			for _, fe := range ve.Errs {
				line := fe.Line
				if line == 0 {
					line = ld.Line
				}
				fmt.Fprintf(stderr, "  %s:%d: %s\n", src.name, line, fe.Error())
			}
			ok = false
			continue
		}
		if dryRun {
			path += "?dryRun=All"
		}
		_, hdr, err := c.do(ctx, method, path, doc, "application/yaml")
		if err != nil {
			fmt.Fprintf(stderr, "error: %s: %v\n", where, err)
			ok = false
			continue
		}
		if ld != nil {
			for _, w := range ld.Warnings {
				fmt.Fprintf(stderr, "Warning: %s:%d: %s: %s\n", src.name, w.Line, ref(def, name), w.Error())
			}
		}
		res := hdr.Get(api.ResultHeader)
		if res == "" {
			res = "configured"
		}
		suffix := ""
		if dryRun {
			suffix = " (dry run)"
		}
		fmt.Fprintf(stdout, "%s %s%s\n", ref(def, name), res, suffix)
	}
	if splitErr != nil {
		fmt.Fprintf(stderr, "error: %s: %v\n", src.name, splitErr)
		ok = false
	}
	if len(docs) == 0 && splitErr == nil {
		fmt.Fprintf(stderr, "error: %s: no resources\n", src.name)
		ok = false
	}
	return ok
}

// canonicalKind returns the kind a name or alias stands for.
func canonicalKind(k *config.Kinds, kind string) string {
	if def := k.LookupKind(kind); def != nil {
		return def.Kind
	}
	return kind
}
