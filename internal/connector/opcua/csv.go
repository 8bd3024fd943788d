package opcua

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/edgeport/edgeport/internal/config"
)

// CSVHeader is the header of a data point CSV file. name and dataSource are
// required; the others fill dataPointConfiguration and may be empty.
var CSVHeader = []string{"name", "dataSource", "samplingInterval", "queueSize", "deadbandType", "deadbandValue", "heartbeatInterval"}

// ParseDataPointsCSV reads data points from CSV with a header row naming
// some of CSVHeader's columns (name and dataSource required, any order).
// Every problem is reported with its line and column; names must be unique.
func ParseDataPointsCSV(r io.Reader) ([]config.DataPoint, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	cr.Comment = '#'
	head, err := cr.Read()
	if err == io.EOF {
		return nil, errors.New("line 1: empty file (want a header: " + strings.Join(CSVHeader, ",") + ")")
	}
	if err != nil {
		return nil, err
	}
	col := map[string]int{}
	for i, h := range head {
		h = strings.TrimSpace(strings.TrimPrefix(h, "\ufeff"))
		known := false
		for _, k := range CSVHeader {
			if strings.EqualFold(h, k) {
				h, known = k, true
			}
		}
		if !known {
			return nil, fmt.Errorf("line 1: unknown column %q (columns: %s)", h, strings.Join(CSVHeader, ", "))
		}
		if _, dup := col[h]; dup {
			return nil, fmt.Errorf("line 1: column %q twice", h)
		}
		col[h] = i
	}
	for _, req := range []string{"name", "dataSource"} {
		if _, ok := col[req]; !ok {
			return nil, fmt.Errorf("line 1: column %q is required", req)
		}
	}
	var out []config.DataPoint
	var errs []string
	seen := map[string]int{}
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			// A *csv.ParseError names its line; the reader cannot go on.
			errs = append(errs, err.Error())
			break
		}
		line, _ := cr.FieldPos(0)
		get := func(k string) string {
			if i, ok := col[k]; ok && i < len(rec) {
				return strings.TrimSpace(rec[i])
			}
			return ""
		}
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue
		}
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Sprintf("line %d: ", line)+fmt.Sprintf(format, args...))
		}
		p := config.DataPoint{Name: get("name"), DataSource: get("dataSource")}
		switch {
		case p.Name == "":
			bad("name is empty")
			continue
		case p.DataSource == "":
			bad("dataSource of %q is empty", p.Name)
			continue
		}
		if _, err := parseNodeID(p.DataSource, []string{}); err != nil && !strings.HasPrefix(p.DataSource, "nsu=") {
			bad("dataSource %q: %v", p.DataSource, err)
			continue
		}
		if prev, dup := seen[p.Name]; dup {
			bad("name %q already used on line %d", p.Name, prev)
			continue
		}
		seen[p.Name] = line
		var pc config.OpcUaDataPointConfiguration
		num := func(k string, dst **int, min int) bool {
			v := get(k)
			if v == "" {
				return true
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < min {
				bad("%s %q: want a whole number of at least %d", k, v, min)
				return false
			}
			*dst = &n
			return true
		}
		if !num("samplingInterval", &pc.SamplingInterval, -1) || !num("queueSize", &pc.QueueSize, 0) || !num("heartbeatInterval", &pc.HeartbeatInterval, 0) {
			continue
		}
		if t := get("deadbandType"); t != "" && !strings.EqualFold(t, "None") {
			v, err := strconv.ParseFloat(get("deadbandValue"), 64)
			if err != nil || v < 0 {
				bad("deadbandValue %q: want a number of at least 0", get("deadbandValue"))
				continue
			}
			switch {
			case strings.EqualFold(t, config.DeadbandAbsolute):
				t = config.DeadbandAbsolute
			case strings.EqualFold(t, config.DeadbandPercent):
				t = config.DeadbandPercent
				if v > 100 {
					bad("deadbandValue %v: more than 100 percent", v)
					continue
				}
			default:
				bad("deadbandType %q: want Absolute, Percent or None", t)
				continue
			}
			pc.Deadband = &config.Deadband{Type: t, Value: v}
		}
		if pc != (config.OpcUaDataPointConfiguration{}) {
			b, _ := json.Marshal(pc)
			p.DataPointConfiguration = config.JSON(b)
		}
		out = append(out, p)
	}
	if len(errs) > 0 {
		return nil, errors.New(strings.Join(errs, "\n"))
	}
	return out, nil
}

// WriteDataPointsCSV writes data points in the format ParseDataPointsCSV
// reads.
func WriteDataPointsCSV(w io.Writer, points []config.DataPoint) error {
	cw := csv.NewWriter(w)
	cw.Write(CSVHeader)
	for _, p := range points {
		var pc config.OpcUaDataPointConfiguration
		if len(p.DataPointConfiguration) > 0 {
			if err := json.Unmarshal(p.DataPointConfiguration, &pc); err != nil {
				return fmt.Errorf("data point %s: %w", p.Name, err)
			}
		}
		itoa := func(v *int) string {
			if v == nil {
				return ""
			}
			return strconv.Itoa(*v)
		}
		dt, dv := "", ""
		if pc.Deadband != nil {
			dt, dv = pc.Deadband.Type, strconv.FormatFloat(pc.Deadband.Value, 'g', -1, 64)
		}
		cw.Write([]string{p.Name, p.DataSource, itoa(pc.SamplingInterval), itoa(pc.QueueSize), dt, dv, itoa(pc.HeartbeatInterval)})
	}
	cw.Flush()
	return cw.Error()
}
