package cli

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgeport/edgeport/internal/connector/modbus"
)

func newModbus(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "modbus",
		Short: "The Modbus TCP connector: discover units and registers",
	}
	var units, rng, table string
	var unit int
	var timeout time.Duration
	scan := &cobra.Command{
		Use:   "scan HOST[:PORT]",
		Short: "List the unit ids that answer, or probe a register range",
		Long: `Without --table, asks every unit id of --units for holding register 0 and
lists those that answer (a value, or an exception: the unit exists but has no
such register). With --table, reads --range of that table of --unit and prints
each address's value, or the exception the device answers for it, to help
write an Asset's data points. The device is asked directly (not through a
running Edgeport), one request at a time. The port defaults to 502.`,
		Example: `  edgeport connector modbus scan 192.168.1.20 --units 1-10
  edgeport connector modbus scan 192.168.1.20:502 --unit 1 --table input --range 5000-5040`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
			if table == "" {
				list, err := parseRanges(units, 0, 255)
				if err != nil {
					return fmt.Errorf("--units: %w", err)
				}
				found, err := modbus.ScanUnits(cmd.Context(), args[0], list, timeout)
				if err != nil {
					return err
				}
				fmt.Fprintln(tw, "UNIT\tHOLDING 0")
				for _, u := range found {
					v := strconv.Itoa(int(u.Value))
					if u.Exception != "" {
						v = u.Exception
					}
					fmt.Fprintf(tw, "%d\t%s\n", u.Unit, v)
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				if len(found) == 0 {
					return fmt.Errorf("no unit of %s answered", units)
				}
				return nil
			}
			from, to, err := parseRange(rng, 0, 65535)
			if err != nil {
				return fmt.Errorf("--range: %w", err)
			}
			res, err := modbus.Probe(cmd.Context(), args[0], unit, table, from, to-from+1, timeout)
			for _, r := range res {
				if r.Exception != "" {
					fmt.Fprintf(tw, "%s:%d\t%s\n", table, r.Address, r.Exception)
				} else if table == "coil" || table == "discreteInput" {
					fmt.Fprintf(tw, "%s:%d\t%v\n", table, r.Address, r.Bit)
				} else {
					fmt.Fprintf(tw, "%s:%d\t%d\t0x%04x\t%d\n", table, r.Address, r.Register, r.Register, int16(r.Register))
				}
			}
			if ferr := tw.Flush(); ferr != nil {
				return ferr
			}
			return err
		},
	}
	scan.Flags().StringVar(&units, "units", "1-247", "unit ids to scan: 1-247, or a list such as 1,3,10-12")
	scan.Flags().DurationVar(&timeout, "timeout", 500*time.Millisecond, "how long to wait for each answer")
	scan.Flags().StringVar(&table, "table", "", "probe this table instead of scanning units: coil, discreteInput, holding or input")
	scan.Flags().StringVar(&rng, "range", "0-99", "addresses to probe (0-based), with --table")
	scan.Flags().IntVar(&unit, "unit", 1, "unit id to probe, with --table")
	cmd.AddCommand(scan)
	return cmd
}

// parseRanges reads "1-5,7,10-12".
func parseRanges(s string, lo, hi int) ([]int, error) {
	var out []int
	for _, part := range strings.Split(s, ",") {
		a, b, err := parseRange(part, lo, hi)
		if err != nil {
			return nil, err
		}
		for i := a; i <= b; i++ {
			out = append(out, i)
		}
	}
	return out, nil
}

func parseRange(s string, lo, hi int) (int, int, error) {
	a, b, isRange := strings.Cut(strings.TrimSpace(s), "-")
	from, err1 := strconv.Atoi(a)
	to := from
	var err2 error
	if isRange {
		to, err2 = strconv.Atoi(b)
	}
	if err1 != nil || err2 != nil || from < lo || to > hi || from > to {
		return 0, 0, fmt.Errorf("%q is not a range between %d and %d such as %d-%d", s, lo, hi, lo, hi)
	}
	return from, to, nil
}
