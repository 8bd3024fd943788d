package apptest

import (
	"log/slog"
	"testing"

	"github.com/edgeport/edgeport/internal/app"
)

// Start returns a running Edgeport: its MQTT listener is bound.
func TestStart(t *testing.T) {
	a := Start(t, app.Config{MQTTAddr: "127.0.0.1:0", WSAddr: app.Off, HTTPAddr: app.Off, DataDir: t.TempDir(), InMemory: true},
		slog.New(slog.DiscardHandler))
	if a.Addrs()["mqtt"] == nil {
		t.Fatalf("no MQTT listener bound: %v", a.Addrs())
	}
}
