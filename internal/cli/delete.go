package cli

import (
	"fmt"
	"io"
	"net/http"

	"github.com/spf13/cobra"

	"github.com/edgeport/edgeport/internal/config"
)

func newDelete(stdout, stderr io.Writer) *cobra.Command {
	var cf clientFlags
	var files []string
	var ignoreNotFound bool
	cmd := &cobra.Command{
		Use:   "delete (KIND NAME... | -f FILE|DIR|-)",
		Short: "Delete resources by name or by the files that define them",
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			type target struct {
				def  *config.KindDef
				name string
			}
			var targets []target
			switch {
			case len(files) > 0 && len(args) > 0:
				return fmt.Errorf("give either KIND NAME or -f, not both")
			case len(files) > 0:
				sources, err := readSources(files, cmd.InOrStdin())
				if err != nil {
					return err
				}
				for _, src := range sources {
					docs, err := config.SplitDocuments(src.data)
					if err != nil {
						return fmt.Errorf("%s: %w", src.name, err)
					}
					for i, doc := range docs {
						kind, name := config.Identify(doc)
						def := c.kinds.LookupKind(kind)
						if def == nil || name == "" {
							return fmt.Errorf("%s: document %d: no kind or metadata.name", src.name, i+1)
						}
						targets = append(targets, target{def, name})
					}
				}
			case len(args) >= 2:
				def, err := lookupKind(c.kinds, args[0])
				if err != nil {
					return err
				}
				for _, n := range args[1:] {
					targets = append(targets, target{def, n})
				}
			default:
				return fmt.Errorf("give KIND NAME... or -f FILE")
			}
			failed := false
			for _, t := range targets {
				_, _, err := c.do(cmd.Context(), http.MethodDelete, "/"+t.def.Plural+"/"+t.name, nil, "")
				switch {
				case err == nil:
					fmt.Fprintf(stdout, "%s deleted\n", ref(t.def, t.name))
				case ignoreNotFound && isNotFound(err):
				default:
					fmt.Fprintf(stderr, "error: %s: %v\n", ref(t.def, t.name), err)
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
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "delete the resources defined in a file, directory or - (standard input)")
	cmd.Flags().BoolVar(&ignoreNotFound, "ignore-not-found", false, "treat resources that do not exist as deleted")
	return cmd
}
