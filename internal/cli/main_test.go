package cli

import (
	"os"
	"testing"
)

// TestMain runs the tests without the environment the commands read
// (EDGEPORT_SERVER, EDGEPORT_TOKEN, EDGEPORT_MQTT): a machine or CI job
// that sets them for its own use must not change what the tests see.
// Tests that need one set it with t.Setenv.
func TestMain(m *testing.M) {
	for _, k := range []string{envServer, envToken, envMQTT} {
		_ = os.Unsetenv(k)
	}
	os.Exit(m.Run())
}
