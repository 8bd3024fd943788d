package connector

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a goroutine outlives its tests: every
// driver run, poller, sender and client must be waited for.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
