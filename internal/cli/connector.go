package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/connector/opcua"
)

func newConnector(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "connector",
		Short: "Act on connectors (OPC UA: certificates, browse, discovery; Modbus: scan)",
	}
	op := &cobra.Command{
		Use:   "opcua",
		Short: "The OPC UA connector: trust list, browse, discovery",
	}
	op.AddCommand(newOpcuaCerts(stdout), newOpcuaBrowse(stdout), newOpcuaDiscover(stdout), newOpcuaImport(stdout), newOpcuaExport(stdout))
	cmd.AddCommand(op, newModbus(stdout))
	return cmd
}

const opcuaAPI = "/connectors/opcua"

func newOpcuaCerts(stdout io.Writer) *cobra.Command {
	certs := &cobra.Command{
		Use:   "certs",
		Short: "The OPC UA trust list: server certificates Edgeport accepts or rejected",
		Long: `Edgeport accepts an OPC UA server's certificate only when it is in the
trusted list or chains to a trusted CA (through the issuers list). An unknown
certificate is refused and kept in the rejected list with its thumbprint,
subject, endpoint and time; "certs trust THUMBPRINT" admits it, and the device
connects at its next attempt without a restart. A thumbprint may be
shortened to a unique prefix of at least 8 characters.`,
	}
	var f clientFlags
	var output string
	list := &cobra.Command{
		Use:   "list",
		Short: "List trusted, issuer and rejected certificates",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			data, _, err := c.do(cmd.Context(), http.MethodGet, opcuaAPI+"/certs", nil, "")
			if err != nil {
				return err
			}
			if output == "json" {
				_, err := stdout.Write(data)
				return err
			}
			var l struct{ Items []opcua.CertEntry }
			if err := json.Unmarshal(data, &l); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "LIST\tTHUMBPRINT\tSUBJECT\tNOT AFTER\tENDPOINT\tREJECTED AT")
			for _, e := range l.Items {
				rej := ""
				if !e.RejectedAt.IsZero() {
					rej = e.RejectedAt.Format(time.RFC3339)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.List, e.Thumbprint, e.Subject, e.NotAfter.Format("2006-01-02"), e.Endpoint, rej)
			}
			return tw.Flush()
		},
	}
	f.add(list)
	list.Flags().StringVarP(&output, "output", "o", "table", "table or json")

	action := func(use, short, method, suffix, done string) *cobra.Command {
		var f clientFlags
		cmd := &cobra.Command{
			Use:   use + " THUMBPRINT",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := f.client()
				if err != nil {
					return err
				}
				data, _, err := c.do(cmd.Context(), method, opcuaAPI+"/certs/"+url.PathEscape(args[0])+suffix, nil, "")
				if err != nil {
					return err
				}
				var e opcua.CertEntry
				if err := json.Unmarshal(data, &e); err != nil {
					return err
				}
				fmt.Fprintf(stdout, "certificate %s (%s) %s\n", e.Thumbprint, e.Subject, done)
				return nil
			},
		}
		f.add(cmd)
		return cmd
	}
	var af clientFlags
	var issuer bool
	add := &cobra.Command{
		Use:   "add FILE",
		Short: "Add a certificate or CRL (DER or PEM) to the trusted list, or with --issuer to the issuers list",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			body, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			c, err := af.client()
			if err != nil {
				return err
			}
			path := opcuaAPI + "/certs"
			if issuer {
				path += "?issuer=true"
			}
			data, _, err := c.do(cmd.Context(), http.MethodPost, path, body, "application/octet-stream")
			if err != nil {
				return err
			}
			var e opcua.CertEntry
			json.Unmarshal(data, &e)
			if e.Thumbprint == "" {
				fmt.Fprintf(stdout, "CRL %s added\n", args[0])
				return nil
			}
			fmt.Fprintf(stdout, "certificate %s (%s) added to %s\n", e.Thumbprint, e.Subject, e.List)
			return nil
		},
	}
	af.add(add)
	add.Flags().BoolVar(&issuer, "issuer", false, "add to the issuers list (CAs that build chains but are not trusted themselves)")

	var of clientFlags
	own := &cobra.Command{
		Use:   "show-own",
		Short: "Print Edgeport's application certificate (PEM), to trust on OPC UA servers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := of.client()
			if err != nil {
				return err
			}
			data, _, err := c.do(cmd.Context(), http.MethodGet, opcuaAPI+"/certs/own", nil, "")
			if err != nil {
				return err
			}
			var o opcua.OwnCert
			if err := json.Unmarshal(data, &o); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "# thumbprint %s\n# subject %s\n# application URI %s\n%s", o.Thumbprint, o.Subject, o.ApplicationURI, o.PEM)
			return nil
		},
	}
	of.add(own)

	certs.AddCommand(list,
		action("trust", "Trust a rejected server certificate", http.MethodPost, "/trust", "is trusted"),
		action("reject", "Stop trusting a certificate (it moves to the rejected list)", http.MethodPost, "/reject", "is rejected"),
		action("remove", "Delete a certificate from whichever list holds it", http.MethodDelete, "", "is removed"),
		add, own)
	return certs
}

func newOpcuaBrowse(stdout io.Writer) *cobra.Command {
	var f clientFlags
	var depth int
	var endpoint, output string
	cmd := &cobra.Command{
		Use:   "browse DEVICE [NODEID]",
		Short: "Print a device's OPC UA address space as a tree (from the Objects folder by default)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			q := url.Values{"depth": {fmt.Sprint(depth)}}
			if len(args) == 2 {
				q.Set("node", args[1])
			}
			path := opcuaAPI + "/browse/" + url.PathEscape(args[0])
			if endpoint != "" {
				path += "/" + url.PathEscape(endpoint)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
			defer cancel()
			data, _, err := c.do(ctx, http.MethodGet, path+"?"+q.Encode(), nil, "")
			if err != nil {
				return err
			}
			if output == "json" {
				_, err := stdout.Write(data)
				return err
			}
			var res struct {
				Items     []*opcua.TreeNode
				Truncated bool
			}
			if err := json.Unmarshal(data, &res); err != nil {
				return err
			}
			if output == "csv" {
				// Every variable found, ready for `import --csv`.
				var pts []config.DataPoint
				seen := map[string]int{}
				var walk func([]*opcua.TreeNode)
				walk = func(ns []*opcua.TreeNode) {
					for _, n := range ns {
						if n.NodeClass == "Variable" {
							name := n.BrowseName
							if seen[name]++; seen[name] > 1 {
								name = fmt.Sprintf("%s_%d", name, seen[name])
							}
							pts = append(pts, config.DataPoint{Name: name, DataSource: n.NodeID})
						}
						walk(n.Children)
					}
				}
				walk(res.Items)
				return opcua.WriteDataPointsCSV(stdout, pts)
			}
			printTree(stdout, res.Items, "")
			if res.Truncated {
				fmt.Fprintln(stdout, "(truncated: browse a deeper node or with a smaller --depth)")
			}
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().IntVar(&depth, "depth", 2, "levels to descend (1-10)")
	cmd.Flags().StringVar(&endpoint, "endpoint", "", "the device's inbound endpoint name (default: its only OPC UA endpoint)")
	cmd.Flags().StringVarP(&output, "output", "o", "tree", "tree, json, or csv (the variables, for import --csv)")
	return cmd
}

func printTree(w io.Writer, nodes []*opcua.TreeNode, indent string) {
	for i, n := range nodes {
		branch, next := "├── ", "│   "
		if i == len(nodes)-1 {
			branch, next = "└── ", "    "
		}
		extra := n.NodeClass
		if n.DataType != "" {
			extra += " " + n.DataType
		}
		fmt.Fprintf(w, "%s%s%s  %s  (%s)\n", indent, branch, n.BrowseName, n.NodeID, extra)
		printTree(w, n.Children, indent+next)
	}
}

func newOpcuaDiscover(stdout io.Writer) *cobra.Command {
	var f clientFlags
	var rng string
	cmd := &cobra.Command{
		Use:   "discover [URL...] [--range HOST[-LASTHOST]:PORT[,PORT]]",
		Short: "Find OPC UA servers (FindServers) and record each as a DiscoveredDevice to approve",
		Long: `Ask discovery URLs and every address of a host/port range (FindServers,
from the Edgeport server's network) which OPC UA servers answer. Each one
becomes a DiscoveredDevice resource ("edgeport get discovereddevices");
"edgeport approve NAME" turns it into a Device. Servers whose address a
Device already reads are only listed.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 && rng == "" {
				return fmt.Errorf("give discovery URLs or --range")
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			body, _ := json.Marshal(opcua.DiscoverRequest{URLs: args, Range: rng})
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Minute)
			defer cancel()
			data, _, err := c.do(ctx, http.MethodPost, opcuaAPI+"/discover", body, "application/json")
			if err != nil {
				return err
			}
			var res struct {
				Items   []opcua.DiscoverResult
				Scanned int
			}
			if err := json.Unmarshal(data, &res); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tRESULT\tAPPLICATION URI\tDISCOVERY URLS")
			for _, r := range res.Items {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Name, r.Result, r.Server.ApplicationURI, strings.Join(r.Server.DiscoveryURLs, ","))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%d addresses asked, %d servers found\n", res.Scanned, len(res.Items))
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().StringVar(&rng, "range", "", "IPv4 hosts and ports to scan, e.g. 10.0.0.10-10.0.0.40:4840,48400")
	return cmd
}

func newApprove(stdout io.Writer) *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "approve [discovereddevice/]NAME",
		Short: "Turn a discovered device into a Device of the same name",
		Long: `Create the Device a DiscoveredDevice describes (its endpoints, with
anonymous authentication; edit it afterwards for credentials and security)
and remove the DiscoveredDevice.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := strings.TrimPrefix(strings.TrimPrefix(args[0], "discovereddevice/"), "discovereddevices/")
			c, err := f.client()
			if err != nil {
				return err
			}
			ddef, dev := c.kinds.Lookup("discovereddevices"), c.kinds.Lookup("devices")
			o, _, err := c.get(cmd.Context(), ddef, name)
			if err != nil {
				return err
			}
			ds := o.Spec.(*config.DiscoveredDeviceSpec)
			spec := &config.DeviceSpec{Manufacturer: ds.Manufacturer, Model: ds.Model, ExternalDeviceID: ds.DiscoveryID, Attributes: ds.Attributes}
			spec.Endpoints.Inbound = map[string]config.InboundEndpoint{}
			for n, ep := range ds.Endpoints.Inbound {
				spec.Endpoints.Inbound[n] = config.InboundEndpoint{EndpointType: ep.EndpointType, Address: ep.Address, Version: ep.Version,
					AdditionalConfiguration: ep.AdditionalConfiguration}
			}
			obj := &config.Object{APIVersion: config.APIVersion, Kind: dev.Kind, Metadata: config.Metadata{Name: name}, Spec: spec}
			body, err := json.Marshal(obj)
			if err != nil {
				return err
			}
			if _, _, err := c.do(cmd.Context(), http.MethodPost, "/"+dev.Plural, body, "application/json"); err != nil {
				return fmt.Errorf("creating device/%s: %w", name, err)
			}
			if _, _, err := c.do(cmd.Context(), http.MethodDelete, "/"+ddef.Plural+"/"+url.PathEscape(name), nil, ""); err != nil {
				return fmt.Errorf("device/%s created, but removing discovereddevice/%s: %w", name, name, err)
			}
			fmt.Fprintf(stdout, "device/%s created from discovereddevice/%s\n", name, name)
			return nil
		},
	}
	f.add(cmd)
	return cmd
}

func newOpcuaImport(stdout io.Writer) *cobra.Command {
	var f clientFlags
	var file, dataset string
	var merge bool
	cmd := &cobra.Command{
		Use:   "import ASSET --csv FILE [--dataset NAME]",
		Short: "Set an asset dataset's data points from a CSV file (name,dataSource,samplingInterval,queueSize,deadbandType,deadbandValue,heartbeatInterval)",
		Long: `Read data points from a CSV file with a header row (name and dataSource are
required, the other columns fill dataPointConfiguration) and put them into
the asset's dataset, creating the dataset when it does not exist. By
default the dataset's points are replaced; --merge keeps the points the file
does not name. "browse DEVICE -o csv" writes such a file from the server's
address space. Every bad line is reported with its number and nothing is
changed.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return fmt.Errorf("--csv FILE is required")
			}
			in, err := os.Open(file)
			if err != nil {
				return err
			}
			pts, err := opcua.ParseDataPointsCSV(in)
			in.Close()
			if err != nil {
				return fmt.Errorf("%s:\n%w", file, err)
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			def := c.kinds.Lookup("assets")
			o, _, err := c.get(cmd.Context(), def, args[0])
			if err != nil {
				return err
			}
			spec := o.Spec.(*config.AssetSpec)
			i := slices.IndexFunc(spec.Datasets, func(d config.Dataset) bool { return d.Name == dataset })
			if i < 0 {
				spec.Datasets = append(spec.Datasets, config.Dataset{Name: dataset})
				i = len(spec.Datasets) - 1
			}
			ds := &spec.Datasets[i]
			if merge {
				byName := map[string]int{}
				for j, p := range ds.DataPoints {
					byName[p.Name] = j
				}
				for _, p := range pts {
					if j, ok := byName[p.Name]; ok {
						ds.DataPoints[j] = p
					} else {
						ds.DataPoints = append(ds.DataPoints, p)
					}
				}
			} else {
				ds.DataPoints = pts
			}
			o.Status = nil
			body, err := json.Marshal(o)
			if err != nil {
				return err
			}
			if _, _, err := c.do(cmd.Context(), http.MethodPut, "/"+def.Plural+"/"+url.PathEscape(args[0]), body, "application/json"); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "asset/%s dataset %s: %d data points\n", args[0], dataset, len(ds.DataPoints))
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().StringVar(&file, "csv", "", "the CSV file")
	cmd.Flags().StringVar(&dataset, "dataset", "default", "the dataset to fill")
	cmd.Flags().BoolVar(&merge, "merge", false, "keep the dataset's points the file does not name")
	return cmd
}

func newOpcuaExport(stdout io.Writer) *cobra.Command {
	var f clientFlags
	var dataset string
	var csvOut bool
	cmd := &cobra.Command{
		Use:   "export ASSET --csv [--dataset NAME]",
		Short: "Print an asset dataset's data points as CSV (the format import reads)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !csvOut {
				return fmt.Errorf("--csv is required (the only export format)")
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			o, _, err := c.get(cmd.Context(), c.kinds.Lookup("assets"), args[0])
			if err != nil {
				return err
			}
			spec := o.Spec.(*config.AssetSpec)
			var names []string
			for _, d := range spec.Datasets {
				if dataset == "" && len(spec.Datasets) == 1 || d.Name == dataset {
					return opcua.WriteDataPointsCSV(stdout, d.DataPoints)
				}
				names = append(names, d.Name)
			}
			return fmt.Errorf("asset %s has no dataset %q (datasets: %s)", args[0], dataset, strings.Join(names, ", "))
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&csvOut, "csv", false, "write CSV")
	cmd.Flags().StringVar(&dataset, "dataset", "", "the dataset (default: the only one)")
	return cmd
}
