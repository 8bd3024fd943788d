package cli

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
)

// checkConnectors reports every device endpoint's connection (from the
// Device resources' status), every asset, and the OPC UA server
// certificates waiting in the rejected list. An endpoint is fine when
// connected (or disabled), a warning while connecting or degraded (its
// connector keeps trying), a failure in error; an asset warns when its
// device is not connected or data points report errors, and fails when it
// cannot run at all.
func checkConnectors(ctx context.Context, hc *http.Client, server, token string) checkResult {
	res := checkResult{Name: "connectors", Status: statusOK}
	type endpointSpec struct {
		EndpointType string `json:"endpointType"`
		Address      string `json:"address"`
	}
	type endpointStatus struct {
		Connected  bool   `json:"connected"`
		State      string `json:"state"`
		LastError  string `json:"lastError"`
		Reconnects uint64 `json:"reconnects"`
	}
	devices, ok := listForCheck[struct {
		Enabled   *bool `json:"enabled"`
		Endpoints struct {
			Inbound map[string]endpointSpec `json:"inbound"`
		} `json:"endpoints"`
	}, struct {
		Endpoints map[string]endpointStatus `json:"endpoints"`
	}](ctx, hc, server, token, "devices", "Device", &res)
	if !ok {
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
				if st.State == "Connecting" || st.State == "Degraded" {
					item.Status = statusWarn
				}
				item.Message = strings.TrimSpace(strings.ToLower(st.State) + ": " + st.LastError)
				if st.State == "" {
					item.Status, item.Message = statusWarn, "no status yet"
				}
				if strings.Contains(st.LastError, "certs trust") {
					item.Status = statusFail
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
	if n, bad, err := checkAssets(ctx, hc, server, token, &res); err != nil {
		res.Items = append(res.Items, checkResult{Name: "assets", Status: statusWarn, Message: err.Error()})
		res.Status = worse(res.Status, statusWarn)
	} else if n > 0 {
		res.Message += fmt.Sprintf("; %d assets, %d with problems", n, bad)
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

// checkAssets adds an item per asset, judged by its Ready condition.
func checkAssets(ctx context.Context, hc *http.Client, server, token string, res *checkResult) (n, bad int, err error) {
	var assets struct {
		Items []apiObject `json:"items"`
	}
	if err := getJSON(ctx, hc, server+"/api/v1/assets", token, &assets); err != nil {
		return 0, 0, err
	}
	for _, a := range assets.Items {
		item := checkResult{Name: "asset/" + a.Metadata.Name, Status: statusWarn, Message: "no status yet"}
		for _, c := range a.Status.Conditions {
			if c.Type != "Ready" {
				continue
			}
			item.Details = map[string]any{"reason": c.Reason}
			switch c.Reason {
			case "Running":
				item.Status, item.Message = statusOK, "running"
			case "DataPointErrors", "DeviceNotConnected", "Pending", "Disabled":
				item.Status, item.Message = statusWarn, c.Reason+": "+c.Message
			default:
				item.Status, item.Message = statusFail, c.Reason+": "+c.Message
			}
		}
		if item.Status != statusOK {
			bad++
		}
		res.Status = worse(res.Status, item.Status)
		res.Items = append(res.Items, item)
	}
	return len(assets.Items), bad, nil
}
