package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgeport/edgeport/internal/config"
)

func newDescribe(stdout io.Writer) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "describe KIND [NAME...]",
		Short: "Show resources in detail: spec, status and recent events",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			def, err := lookupKind(c.kinds, args[0])
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			names := args[1:]
			if len(names) == 0 {
				items, err := c.list(ctx, def, "")
				if err != nil {
					return err
				}
				for _, o := range items {
					names = append(names, o.Metadata.Name)
				}
			}
			for i, name := range names {
				o, raw, err := c.get(ctx, def, name)
				if err != nil {
					return err
				}
				data, _, err := c.do(ctx, http.MethodGet, "/"+def.Plural+"/"+name+"/events", nil, "")
				if err != nil && !isNotFound(err) {
					return err
				}
				var evs struct {
					Items []config.Event `json:"items"`
				}
				if data != nil {
					if err := json.Unmarshal(data, &evs); err != nil {
						return fmt.Errorf("decoding events: %w", err)
					}
				}
				if i > 0 {
					fmt.Fprintln(stdout)
				}
				if err := describe(stdout, o, raw, evs.Items, time.Now()); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cf.add(cmd)
	return cmd
}

func describe(w io.Writer, o *config.Object, raw []byte, events []config.Event, now time.Time) error {
	m := o.Metadata
	kv := func(k, v string) { fmt.Fprintf(w, "%-13s %s\n", k+":", v) }
	kv("Name", m.Name)
	kv("Kind", o.Kind)
	kv("Labels", joinMap(m.Labels))
	kv("Annotations", joinMap(m.Annotations))
	if m.CreationTimestamp != nil {
		kv("Created", m.CreationTimestamp.Format(time.RFC3339)+" ("+age(m.CreationTimestamp, now)+" ago)")
	}
	kv("Generation", fmt.Sprint(m.Generation))
	if f := m.Annotations[config.AnnotationConfigFile]; f != "" {
		kv("Source", "config file "+f+" (change it there)")
	} else {
		kv("Source", "API")
	}

	// The spec as YAML, from the server's JSON so nothing is lost.
	var whole struct {
		Spec json.RawMessage `json:"spec"`
	}
	if err := json.Unmarshal(raw, &whole); err != nil {
		return fmt.Errorf("decoding %s: %w", m.Name, err)
	}
	spec, err := config.JSONToYAML(whole.Spec)
	if err != nil {
		return err
	}
	fmt.Fprintln(w, "Spec:")
	fmt.Fprint(w, indent(string(spec), "  "))

	if s, ok := o.Spec.(*config.SchemaSpec); ok {
		describeSchemaVersions(w, s)
		describeSchemaUses(w, o.Status)
	}

	fmt.Fprintln(w, "Status:")
	st := o.Status
	if st == nil {
		st = &config.Status{}
	}
	obs := fmt.Sprint(st.ObservedGeneration)
	if st.ObservedGeneration < m.Generation {
		obs += fmt.Sprintf(" (generation %d not applied yet)", m.Generation)
	}
	fmt.Fprintf(w, "  Observed Generation: %s\n", obs)
	fmt.Fprintln(w, "  Conditions:")
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "    TYPE\tSTATUS\tREASON\tSINCE\tMESSAGE")
	for _, c := range st.Conditions {
		t := c.LastTransitionTime
		fmt.Fprintf(tw, "    %s\t%s\t%s\t%s\t%s\n", c.Type, c.Status, c.Reason, age(&t, now), c.Message)
	}
	_ = tw.Flush()
	if len(st.Ports) > 0 {
		fmt.Fprintln(w, "  Ports:")
		tw = tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "    PORT\tPROTOCOL\tREADY\tADDRESS\tMESSAGE")
		for _, p := range st.Ports {
			fmt.Fprintf(tw, "    %d\t%s\t%t\t%s\t%s\n", p.Port, p.Protocol, p.Ready, p.Address, p.Message)
		}
		_ = tw.Flush()
	}

	fmt.Fprintln(w, "Events:")
	if len(events) == 0 {
		fmt.Fprintln(w, "  <none>")
		return nil
	}
	tw = tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  TYPE\tREASON\tAGE\tCOUNT\tMESSAGE")
	for _, e := range events {
		t := e.LastTimestamp
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%s\n", e.Type, e.Reason, age(&t, now), e.Count, e.Message)
	}
	return tw.Flush()
}

func joinMap(m map[string]string) string {
	if len(m) == 0 {
		return "<none>"
	}
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ",")
}

func sortedKeys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }

func indent(s, prefix string) string {
	lines := strings.SplitAfter(s, "\n")
	var b strings.Builder
	for _, l := range lines {
		if l != "" {
			b.WriteString(prefix + l)
		}
	}
	return b.String()
}
