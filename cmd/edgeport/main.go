// Command edgeport is the Edgeport edge IoT data platform: MQTT broker and
// management CLI in one binary.
package main

import (
	"os"

	"github.com/edgeport/edgeport/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
