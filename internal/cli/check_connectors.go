package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
)

// checkConnectors reports every device endpoint's connection (from the
// Device resources' status) and the OPC UA server certificates waiting in
// the rejected list.
func checkConnectors(ctx context.Context, hc *http.Client, server, token string) checkResult {
	res := checkResult{Name: "connectors", Status: statusOK}
	var devices struct {
		Items []struct {
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
			Spec struct {
				Enabled   *bool `json:"enabled"`
				Endpoints struct {
					Inbound map[string]struct {
						EndpointType string `json:"endpointType"`
						Address      string `json:"address"`
					} `json:"inbound"`
				} `json:"endpoints"`
			} `json:"spec"`
			Status struct {
				Endpoints map[string]struct {
					Connected  bool   `json:"connected"`
					State      string `json:"state"`
					LastError  string `json:"lastError"`
					Reconnects uint64 `json:"reconnects"`
				} `json:"endpoints"`
			} `json:"status"`
		} `json:"items"`
	}
	err := getJSON(ctx, hc, server+"/api/v1/devices", token, &devices)
	var se *httpStatusError
	if errors.As(err, &se) && se.code == http.StatusNotFound {
		res.Status, res.Message = statusWarn, "not available (this server has no Device resources)"
		return res
	}
	if err != nil {
		res.Status, res.Message = statusWarn, err.Error()
		return res
	}
	total, up := 0, 0
	for _, d := range devices.Items {
		names := make([]string, 0, len(d.Spec.Endpoints.Inbound))
		for n := range d.Spec.Endpoints.Inbound {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			spec := d.Spec.Endpoints.Inbound[n]
			st := d.Status.Endpoints[n]
			total++
			item := checkResult{Name: "device/" + d.Metadata.Name + "/" + n,
				Details: map[string]any{"type": spec.EndpointType, "address": spec.Address, "state": st.State, "reconnects": st.Reconnects}}
			switch {
			case d.Spec.Enabled != nil && !*d.Spec.Enabled:
				item.Status, item.Message = statusOK, "disabled"
				up++
			case st.Connected:
				item.Status, item.Message = statusOK, fmt.Sprintf("connected to %s", spec.Address)
				up++
			default:
				item.Status = statusFail
				item.Message = strings.TrimSpace(strings.ToLower(st.State) + ": " + st.LastError)
				if st.State == "" {
					item.Message = "no status yet"
				}
				if strings.Contains(st.LastError, "certs trust") {
					item.Hint = "the server certificate waits in the OPC UA rejected list"
				}
			}
			res.Status = worse(res.Status, item.Status)
			res.Items = append(res.Items, item)
		}
	}
	res.Message = fmt.Sprintf("%d of %d device endpoints connected", up, total)
	if total == 0 {
		res.Message = "no devices"
	}

	var certs struct {
		Items []struct {
			Thumbprint string `json:"thumbprint"`
			List       string `json:"list"`
			Subject    string `json:"subject"`
			Endpoint   string `json:"endpoint"`
		} `json:"items"`
	}
	if err := getJSON(ctx, hc, server+"/api/v1/connectors/opcua/certs", token, &certs); err == nil {
		var rejected []string
		for _, c := range certs.Items {
			if c.List == "rejected" {
				rejected = append(rejected, c.Thumbprint)
			}
		}
		item := checkResult{Name: "opcua trust list", Status: statusOK, Message: fmt.Sprintf("%d certificates, none rejected", len(certs.Items))}
		if len(rejected) > 0 {
			item.Status = statusWarn
			item.Message = fmt.Sprintf("%d rejected server certificate(s): %s", len(rejected), strings.Join(rejected, ", "))
			item.Hint = "review with `edgeport connector opcua certs list`, admit with `edgeport connector opcua certs trust THUMBPRINT`"
		}
		res.Status = worse(res.Status, item.Status)
		res.Items = append(res.Items, item)
	}
	return res
}
