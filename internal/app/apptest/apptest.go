// Package apptest runs a whole Edgeport (internal/app) inside a test of
// another package, stopped when the test ends. Imported by tests only.
package apptest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/app"
)

// StopTimeout bounds the stop at the end of the test.
const StopTimeout = 10 * time.Second

// Start makes and starts an Edgeport with cfg and log and stops it when the
// test ends, failing the test if it does not stop cleanly.
func Start(t testing.TB, cfg app.Config, log *slog.Logger) *app.App {
	t.Helper()
	a, err := app.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), StopTimeout)
		defer cancel()
		if err := a.Stop(ctx); err != nil {
			t.Errorf("stopping edgeport: %v", err)
		}
	})
	return a
}
