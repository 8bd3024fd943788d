package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/mqtt/client"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/schemainfer"
)

func newSchema(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "schema",
		Short: "Work with message schemas",
	}
	cmd.AddCommand(newSchemaInfer(stdout, stderr))
	return cmd
}

func newSchemaInfer(stdout, stderr io.Writer) *cobra.Command {
	var (
		conn    mqttFlags
		topics  []string
		file    string
		samples int
		seconds time.Duration
		name    string
		delta   bool
		output  string
	)
	cmd := &cobra.Command{
		Use:   "infer (-t FILTER… | --file FILE.jsonl)",
		Short: "Propose a JSON Schema from sample messages on a topic or in a JSON Lines file",
		Long: `Listen on one or more topic filters until --samples messages arrived or
--seconds passed (whichever comes first), or read a JSON Lines file, and
print a Schema resource ready for edgeport apply: a draft-07 JSON Schema with
the types seen at every place, as required the fields every sample had, the
numeric range seen (minimum, maximum), and date-time or date formats for
strings that all were. --delta proposes the Delta/1.0 form (the columns a
Parquet destination would write). -o schema prints the schema document
alone. Payloads that are not JSON are counted and skipped. Review the
proposal: ranges and required fields are what the samples showed, not what
the device promises.`,
		Example: `  edgeport schema infer -t 'plant/+/thermostat' --samples 100 --name thermostat > thermostat.yaml
  edgeport schema infer --file samples.jsonl --delta -o schema`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (len(topics) == 0) == (file == "") {
				return errors.New("give -t/--topic (listen) or --file (a JSON Lines file), not both")
			}
			if samples < 1 {
				return fmt.Errorf("--samples: must be at least 1 (got %d)", samples)
			}
			if output != "yaml" && output != "schema" {
				return fmt.Errorf("-o: %q is not yaml or schema", output)
			}
			if err := config.CheckName(name); err != nil {
				return fmt.Errorf("--name: %w", err)
			}
			in := schemainfer.New()
			skipped := 0
			add := func(p []byte) {
				if err := in.Add(p); err != nil {
					skipped++
				}
			}
			if file != "" {
				if err := readJSONLines(file, samples, add); err != nil {
					return err
				}
			} else if err := listenSamples(cmd.Context(), &conn, topics, samples, seconds, func(p []byte) int { add(p); return in.Samples() }); err != nil {
				return err
			}
			if skipped > 0 {
				fmt.Fprintf(stderr, "%d payload(s) were not JSON and are left out\n", skipped)
			}
			if in.Samples() == 0 {
				return errors.New("no JSON sample to infer from")
			}
			doc, format := in.Schema(), config.SchemaFormatJSONDraft07
			content, err := json.MarshalIndent(doc, "", "  ")
			if err != nil {
				return err
			}
			if delta {
				c, err := config.CompileSchemaContent(format, string(content))
				if err != nil {
					return fmt.Errorf("the inferred schema does not compile: %w", err)
				}
				fields, err := c.Fields()
				if err != nil {
					return fmt.Errorf("no Delta form: %w", err)
				}
				format = config.SchemaFormatDelta
				if content, err = json.MarshalIndent(config.DeltaSchema(fields), "", "  "); err != nil {
					return err
				}
			}
			if output == "schema" {
				fmt.Fprintf(stdout, "%s\n", content)
				return nil
			}
			fmt.Fprintf(stdout, "apiVersion: %s\nkind: Schema\nmetadata:\n  name: %s\nspec:\n  format: %s\n  description: %s\n  versions:\n  - name: \"1\"\n    schemaContent: |\n%s",
				config.APIVersion, name, format, fmt.Sprintf("%q", fmt.Sprintf("inferred from %d sample(s)", in.Samples())), indent(string(content)+"\n", "      "))
			return nil
		},
	}
	conn.add(cmd.Flags(), true)
	cmd.Flags().StringArrayVarP(&topics, "topic", "t", nil, "topic filter to listen on (repeatable)")
	cmd.Flags().StringVar(&file, "file", "", "JSON Lines file of sample messages, one per line")
	cmd.Flags().IntVarP(&samples, "samples", "n", 10, "messages to take")
	cmd.Flags().DurationVar(&seconds, "seconds", 30*time.Second, "listen at most this long (a duration: 30s, 2m)")
	cmd.Flags().StringVar(&name, "name", "inferred", "the Schema resource's name")
	cmd.Flags().BoolVar(&delta, "delta", false, "propose the Delta/1.0 form (Parquet columns) instead of JSON Schema")
	cmd.Flags().StringVarP(&output, "output", "o", "yaml", "yaml (a Schema resource) or schema (the document alone)")
	return cmd
}

// readJSONLines hands each non-empty line of a file to add, at most max.
func readJSONLines(path string, max int, add func([]byte)) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	n := 0
	for sc.Scan() && n < max {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		add(append([]byte(nil), line...))
		n++
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	return nil
}

// listenSamples subscribes to filters and hands payloads to add (which
// returns how many samples it has) until max are taken or d passes.
func listenSamples(ctx context.Context, conn *mqttFlags, filters []string, max int, d time.Duration, add func([]byte) int) error {
	c, where, err := conn.connect(ctx, 10*time.Second, false)
	if err != nil {
		return err
	}
	defer c.Close()
	msgs := make(chan []byte, 256)
	handler := func(ctx context.Context, m *client.Message) {
		select {
		case msgs <- m.Payload:
		case <-ctx.Done():
		}
	}
	subs := make([]packet.Subscription, len(filters))
	for i, f := range filters {
		subs[i] = packet.Subscription{Filter: f, QoS: 1}
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = c.Subscribe(sctx, client.Subscription{Filters: subs, Handler: handler})
	cancel()
	if err != nil {
		return fmt.Errorf("subscribing on %s: %w", where, err)
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case p := <-msgs:
			if add(p) >= max {
				return nil
			}
		case <-timer.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
