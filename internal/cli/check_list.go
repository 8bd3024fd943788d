package cli

import (
	"context"
	"errors"
	"net/http"
)

// resourceList is an API list of one kind as a check reads it: each item's
// name, and the parts of its spec and status the check judges.
type resourceList[Spec, Status any] struct {
	Items []struct {
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
		Spec   Spec   `json:"spec"`
		Status Status `json:"status"`
	} `json:"items"`
}

// listForCheck reads the resources at /api/v1/<plural> for the check res.
// It reports false when res is decided already, as a warning: the server
// has no such kind (an older version), or the list cannot be read.
func listForCheck[Spec, Status any](ctx context.Context, hc *http.Client, server, token, plural, kind string, res *checkResult) (resourceList[Spec, Status], bool) {
	var list resourceList[Spec, Status]
	err := getJSON(ctx, hc, server+"/api/v1/"+plural, token, &list)
	var se *httpStatusError
	if errors.As(err, &se) && se.code == http.StatusNotFound {
		res.Status, res.Message = statusWarn, "not available (this server has no "+kind+" resources)"
		return list, false
	}
	if err != nil {
		res.Status, res.Message = statusWarn, err.Error()
		return list, false
	}
	return list, true
}
