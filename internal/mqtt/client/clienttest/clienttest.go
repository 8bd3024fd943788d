// Package clienttest connects the internal MQTT client for a test: the test
// fails if it cannot connect, and the client stops when the test ends.
// Imported by tests only.
package clienttest

import (
	"context"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/client"
)

// Timeout bounds the connect. It bounds a failing test, not a passing one.
const Timeout = 10 * time.Second

// Connect makes a client with o, connects it within Timeout and closes it
// when the test ends.
func Connect(t testing.TB, o client.Options) *client.Client {
	t.Helper()
	c, err := client.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatalf("connecting %s: %v", o.ClientID, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}
