package cli

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// checkDataflows reports every dataflow from its status: running and
// delivering is fine; disabled is fine; retrying (the destination does not
// accept, messages wait in the flow's buffer) is a warning; failed or
// referring to a missing endpoint is a failure.
func checkDataflows(ctx context.Context, hc *http.Client, server, token string) checkResult {
	res := checkResult{Name: "dataflows", Status: statusOK}
	flows, ok := listForCheck[struct{}, struct {
		Conditions []apiCondition `json:"conditions"`
		Dataflow   *struct {
			Received         uint64     `json:"received"`
			Sent             uint64     `json:"sent"`
			Filtered         uint64     `json:"filtered"`
			Errors           uint64     `json:"errors"`
			DeadLettered     uint64     `json:"deadLettered"`
			BufferedMessages int64      `json:"bufferedMessages"`
			BufferedBytes    int64      `json:"bufferedBytes"`
			LastError        string     `json:"lastError"`
			LastErrorTime    *time.Time `json:"lastErrorTime"`
		} `json:"dataflow"`
	}](ctx, hc, server, token, "dataflows", "Dataflow", &res)
	if !ok {
		return res
	}
	running, buffered := 0, int64(0)
	for _, f := range flows.Items {
		item := checkResult{Name: "dataflow/" + f.Metadata.Name, Status: statusWarn, Message: "no status yet"}
		for _, c := range f.Status.Conditions {
			if c.Type != "Ready" {
				continue
			}
			switch {
			case c.Status == "True":
				item.Status, item.Message = statusOK, "running"
				running++
			case c.Reason == "Disabled":
				item.Status, item.Message = statusOK, "disabled"
			case c.Reason == "Retrying" || c.Reason == "Restarting" || c.Reason == "Subscribing":
				item.Status, item.Message = statusWarn, strings.ToLower(c.Reason)+": "+c.Message
				running++
			default:
				item.Status, item.Message = statusFail, c.Reason+": "+c.Message
			}
		}
		if st := f.Status.Dataflow; st != nil {
			buffered += st.BufferedMessages
			item.Details = map[string]any{"received": st.Received, "sent": st.Sent, "filtered": st.Filtered,
				"errors": st.Errors, "deadLettered": st.DeadLettered, "bufferedMessages": st.BufferedMessages,
				"bufferedBytes": st.BufferedBytes}
			if st.LastError != "" {
				item.Details["lastError"] = st.LastError
				if st.LastErrorTime != nil {
					item.Details["lastErrorTime"] = st.LastErrorTime.Format(time.RFC3339)
				}
			}
			if item.Status == statusOK && st.BufferedMessages > 0 {
				item.Message += fmt.Sprintf(", %d messages buffered", st.BufferedMessages)
			}
		}
		res.Status = worse(res.Status, item.Status)
		res.Items = append(res.Items, item)
	}
	res.Message = fmt.Sprintf("%d of %d dataflows running", running, len(flows.Items))
	if buffered > 0 {
		res.Message += fmt.Sprintf(", %d messages buffered", buffered)
	}
	return res
}
