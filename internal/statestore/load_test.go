package statestore

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/bench"
	"github.com/edgeport/edgeport/internal/store"
)

// TestLoadScenario runs `edgeport bench --scenario statestore` (the load
// generator of bench/statestore.sh) against a durable state store: SETs,
// then GETs mixed with SETs, several in flight per client, every request
// answered without an error. It asserts behaviour, not speed.
func TestLoadScenario(t *testing.T) {
	e := startEnvStore(t, Options{}, store.Options{Sync: store.SyncBatch}, t.TempDir())
	for _, gets := range []int{0, 90} {
		var progress bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		res, err := bench.Run(ctx, bench.Options{
			Addr: e.addr, Scenario: bench.StateStore, Clients: 4, Window: 8, Gets: gets, Keys: 20,
			Duration: 300 * time.Millisecond, Progress: &progress,
		})
		cancel()
		if err != nil {
			t.Fatalf("%d%% GET: %v\n%s", gets, err, progress.String())
		}
		var table bytes.Buffer
		_ = res.WriteTable(&table)
		t.Logf("\n%s", table.String())
		if res.Received == 0 || res.Errors != 0 || res.Lost != 0 || res.Foreign != 0 {
			t.Fatalf("%d%% GET: %d answered, %d errors (first %s), %d unanswered, %d foreign",
				gets, res.Received, res.Errors, res.FirstError, res.Lost, res.Foreign)
		}
		if res.SetLatency == nil || (gets > 0) != (res.GetLatency != nil) {
			t.Fatalf("%d%% GET: latencies by operation missing: SET %v, GET %v", gets, res.SetLatency, res.GetLatency)
		}
	}
}
