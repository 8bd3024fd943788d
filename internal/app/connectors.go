package app

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/edgeport/edgeport/internal/connector"
	"github.com/edgeport/edgeport/internal/connector/modbus"
	"github.com/edgeport/edgeport/internal/connector/opcua"
)

// connectors returns the protocol connectors this build serves, one per
// device endpointType. The OPC UA connector keeps its application
// certificate and trust list in <data-dir>/opcua/pki (not under
// <data-dir>/pki: the broker's automatic CA installs that directory as a
// whole with one rename); without a data directory they live in a
// temporary one removed at Stop.
func (a *App) connectors(log *slog.Logger) ([]connector.Connector, error) {
	pki := ""
	if a.cfg.DataDir != "" {
		pki = filepath.Join(a.cfg.DataDir, "opcua", "pki")
	} else {
		dir, err := os.MkdirTemp("", "edgeport-opcua-pki-")
		if err != nil {
			return nil, fmt.Errorf("opc ua pki: %w", err)
		}
		a.tmpPKI, pki = dir, dir
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	// One application URI per Edgeport instance: servers tie their trust
	// in the certificate to it.
	a.opcua, err = opcua.NewConnector(pki, "urn:"+host+":edgeport", host, log.With("connector", "opcua"))
	if err != nil {
		return nil, err
	}
	if err := a.reg.Register(a.opcua); err != nil {
		return nil, fmt.Errorf("opc ua metrics: %w", err)
	}
	a.modbus = modbus.New(a.reg)
	return []connector.Connector{a.opcua, a.modbus}, nil
}
