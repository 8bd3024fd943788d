package cli

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgeport/edgeport/internal/pki"
)

func newCA(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "The certificate authority of TLS ports with generated certificates",
		Args:  cobra.NoArgs,
	}
	var dataDir, out string
	var create bool
	export := &cobra.Command{
		Use:   "export",
		Short: "Write the CA certificate (PEM) that clients trust",
		Long: `Write the certificate of the CA that signs the server certificates of TLS
ports with tls.mode Automatic, for clients to trust (mosquitto_sub --cafile,
MQTT.js ca, Paho tls_set). edgeport serve creates the CA in <data-dir>/pki
when the first such port starts; --create makes it now, so clients can be
provisioned before the broker runs. The CA's key never leaves the data
directory.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			dir := pki.Dir(dataDir)
			var ca *pki.CA
			var err error
			if create {
				var created bool
				if ca, created, err = pki.LoadOrCreateCA(dir, time.Now()); err == nil && created {
					fmt.Fprintf(stderr, "created a CA in %s, valid until %s\n", dir, ca.Cert.NotAfter.Format(time.DateOnly))
				}
			} else if ca, err = pki.LoadCA(dir); errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("no CA in %s: edgeport serve --data-dir %s creates it when a port with tls.mode Automatic starts (or use --create)", dir, dataDir)
			}
			if err != nil {
				return err
			}
			if out == "" || out == "-" {
				_, err = stdout.Write(ca.CertPEM)
				return err
			}
			// Written aside and renamed, so a client never reads half a file.
			tmp, err := os.CreateTemp(filepath.Dir(out), ".ca-export-")
			if err != nil {
				return fmt.Errorf("-o: %w", err)
			}
			defer os.Remove(tmp.Name())
			if _, err = tmp.Write(ca.CertPEM); err == nil {
				err = tmp.Chmod(0o644)
			}
			if cerr := tmp.Close(); err == nil {
				err = cerr
			}
			if err == nil {
				err = os.Rename(tmp.Name(), out)
			}
			if err != nil {
				return fmt.Errorf("-o: %w", err)
			}
			return nil
		},
	}
	f := export.Flags()
	f.StringVar(&dataDir, "data-dir", "edgeport-data", "edgeport serve's data directory")
	f.StringVarP(&out, "output", "o", "", "file to write (default: standard output)")
	f.BoolVar(&create, "create", false, "create the CA if the data directory has none")
	cmd.AddCommand(export)
	return cmd
}
