package cli

import (
	"context"
	"encoding/json"
	"time"
)

// CheckReport runs the checks of `edgeport check -o json` against the
// server at URL server with the API token, without MQTT credentials, and
// returns the JSON report. The portal's support bundle includes it.
func CheckReport(ctx context.Context, server, token string) ([]byte, error) {
	o := checkOptions{server: server, token: token, timeout: 5 * time.Second}
	o.mqtt.version = "5"
	return json.MarshalIndent(runChecks(ctx, o), "", "  ")
}
