package app

import (
	"log/slog"

	"github.com/edgeport/edgeport/internal/connector"
)

// connectors returns the protocol connectors this build serves, one per
// device endpointType.
func connectors(log *slog.Logger) []connector.Connector {
	return nil
}
