package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgeport/edgeport/internal/api"
	"github.com/edgeport/edgeport/internal/config"
)

func newGet(stdout, stderr io.Writer) *cobra.Command {
	var cf clientFlags
	var output, selector string
	var watch bool
	cmd := &cobra.Command{
		Use:   "get KIND[,KIND...]|all [NAME...]",
		Short: "List resources, or show one, as a table, YAML or JSON",
		Long: `List resources of a kind (or every kind with "all"), or show named ones.
KIND is a kind, plural or short name in any case: broker, brokerlisteners,
listener, bl, authn, authz, devices, assets...; several kinds may be given
separated by commas (get devices,assets). The table shows NAME, READY, REASON and AGE and
the kind's own columns; -o wide adds the Ready condition's message and the
labels; -o name prints kind/name lines; -o yaml prints documents that
edgeport apply accepts (as does -o json, a List).`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch output {
			case "table", "wide", "name", "yaml", "json":
			default:
				return fmt.Errorf("-o: %q is not table, wide, name, yaml or json", output)
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if watch {
				return watchGet(ctx, c, args, selector, output, stdout, stderr)
			}
			var defs []*config.KindDef
			if strings.EqualFold(args[0], "all") {
				if len(args) > 1 {
					return fmt.Errorf("get all takes no names")
				}
				defs = c.kinds.All()
			} else {
				// KIND may list several kinds, as in get devices,assets.
				for _, k := range strings.Split(args[0], ",") {
					def, err := lookupKind(c.kinds, k)
					if err != nil {
						return err
					}
					defs = append(defs, def)
				}
				if len(defs) > 1 && len(args) > 1 {
					return fmt.Errorf("names need a single kind (got %s)", args[0])
				}
			}
			type group struct {
				def   *config.KindDef
				items []*config.Object
				raw   []json.RawMessage
			}
			var groups []group
			for _, def := range defs {
				g := group{def: def}
				if len(args) > 1 {
					for _, name := range args[1:] {
						o, raw, err := c.get(ctx, def, name)
						if err != nil {
							return err
						}
						g.items, g.raw = append(g.items, o), append(g.raw, raw)
					}
				} else {
					items, err := c.list(ctx, def, selector)
					if err != nil {
						return err
					}
					g.items = items
					for _, o := range items {
						raw, err := json.Marshal(o)
						if err != nil {
							return err
						}
						g.raw = append(g.raw, raw)
					}
				}
				groups = append(groups, g)
			}
			var all []json.RawMessage
			for _, g := range groups {
				all = append(all, g.raw...)
			}
			single := len(args) == 2
			switch output {
			case "json":
				if single {
					return writeIndented(stdout, all[0])
				}
				if all == nil {
					all = []json.RawMessage{}
				}
				data, err := json.Marshal(map[string]any{"apiVersion": config.APIVersion, "kind": "List", "items": all})
				if err != nil {
					return err
				}
				return writeIndented(stdout, data)
			case "yaml":
				for i, raw := range all {
					y, err := config.JSONToYAML(raw)
					if err != nil {
						return err
					}
					if i > 0 {
						fmt.Fprintln(stdout, "---")
					}
					if _, err := stdout.Write(y); err != nil {
						return err
					}
				}
				return nil
			case "name":
				for _, g := range groups {
					for _, o := range g.items {
						fmt.Fprintln(stdout, ref(g.def, o.Metadata.Name))
					}
				}
				return nil
			}
			printed := 0
			for _, g := range groups {
				if len(g.items) == 0 {
					continue
				}
				if printed > 0 {
					fmt.Fprintln(stdout)
				}
				printTable(stdout, g.def, g.items, len(groups) > 1, output == "wide", time.Now())
				printed++
			}
			if printed == 0 {
				fmt.Fprintln(stderr, "No resources found.")
			}
			return nil
		},
	}
	cf.add(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, wide, name, yaml or json")
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "label selector, e.g. env=prod,tier!=db")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "after the list, print a line (or document) per change until interrupted (one kind)")
	return cmd
}

// watchGet lists a kind and then prints every change, from the API's watch
// stream: the table and then a row per change (-o name: kind/name; yaml:
// a document per change; json: one {"type","object"} event per line).
func watchGet(ctx context.Context, c *apiClient, args []string, selector, output string, stdout, stderr io.Writer) error {
	if strings.EqualFold(args[0], "all") || strings.Contains(args[0], ",") {
		return errors.New("--watch takes one kind")
	}
	def, err := lookupKind(c.kinds, args[0])
	if err != nil {
		return err
	}
	names := map[string]bool{}
	for _, n := range args[1:] {
		names[n] = true
	}
	var initial []*config.Object
	listed, header := false, false
	return c.watch(ctx, def, selector, func(ev api.WatchEvent, raw json.RawMessage) error {
		if ev.Type == "BOOKMARK" {
			listed = true
			if output == "table" || output == "wide" {
				if len(initial) == 0 {
					fmt.Fprintln(stderr, "No resources found.")
				} else {
					printTable(stdout, def, initial, false, output == "wide", time.Now())
					header = true
				}
			}
			return nil
		}
		o := ev.Object
		if o == nil || len(names) > 0 && !names[o.Metadata.Name] {
			return nil
		}
		if !listed && (output == "table" || output == "wide") {
			initial = append(initial, o)
			return nil
		}
		switch output {
		case "table", "wide":
			printRows(stdout, def, []*config.Object{o}, false, output == "wide", time.Now(), !header)
			header = true
		case "name":
			fmt.Fprintln(stdout, ref(def, o.Metadata.Name))
		case "json":
			_, err := fmt.Fprintf(stdout, "%s\n", raw)
			return err
		case "yaml":
			y, err := config.JSONToYAML(mustJSON(o))
			if err != nil {
				return err
			}
			fmt.Fprintln(stdout, "---")
			_, err = stdout.Write(y)
			return err
		}
		return nil
	})
}

func mustJSON(o *config.Object) []byte {
	b, _ := json.Marshal(o)
	return b
}

func writeIndented(w io.Writer, data []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, data, "", "  "); err != nil {
		return err
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// printTable prints NAME, READY, REASON, AGE and the kind's columns.
func printTable(w io.Writer, def *config.KindDef, items []*config.Object, qualify, wide bool, now time.Time) {
	printRows(w, def, items, qualify, wide, now, true)
}

// printRows is printTable with or without the header (a watch prints one
// row per change under the first table, as kubectl get --watch does).
func printRows(w io.Writer, def *config.KindDef, items []*config.Object, qualify, wide bool, now time.Time, header bool) {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	hdr := []string{"NAME", "READY", "REASON", "AGE"}
	for _, c := range def.Columns {
		hdr = append(hdr, c.Header)
	}
	if wide {
		hdr = append(hdr, "LABELS", "MESSAGE")
	}
	if header {
		fmt.Fprintln(tw, strings.Join(hdr, "\t"))
	}
	for _, o := range items {
		name := o.Metadata.Name
		if qualify {
			name = ref(def, name)
		}
		r := o.Ready()
		row := []string{name, r.Status, r.Reason, age(o.Metadata.CreationTimestamp, now)}
		for _, c := range def.Columns {
			row = append(row, c.Value(o))
		}
		if wide {
			row = append(row, labelString(o.Metadata.Labels), strings.ReplaceAll(r.Message, "\n", " "))
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	_ = tw.Flush()
}

// labelString prints labels as a selector would list them: k=v,k2=v2,
// sorted; <none> without any.
func labelString(labels map[string]string) string {
	if len(labels) == 0 {
		return "<none>"
	}
	out := make([]string, 0, len(labels))
	for k, v := range labels {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

// age prints a duration the way kubectl does: 45s, 3m12s, 5h, 12d.
func age(t *time.Time, now time.Time) string {
	if t == nil {
		return "<unknown>"
	}
	d := now.Sub(*t)
	switch {
	case d < 0:
		return "0s"
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 10*time.Minute:
		return fmt.Sprintf("%dm%ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 3*time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}
