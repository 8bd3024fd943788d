package app

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/store"
)

// TestResourcesMigratedFromFiles upgrades a data directory from the file
// layout (<data-dir>/resources/<kind>/<name>.json, written here by the
// same code earlier versions used) and checks that every resource is kept,
// with its identity, in the store, across more restarts.
func TestResourcesMigratedFromFiles(t *testing.T) {
	data := t.TempDir()
	old := config.NewStore(config.Builtin(), filepath.Join(data, "resources"), nil)
	for _, doc := range []string{
		listenerYAML("upgraded", "{port: 0}"),
		listenerYAML("upgraded", "{port: 0, protocol: WebSockets}"), // generation 2
		"apiVersion: edgeport.io/v1\nkind: BrokerAuthorization\nmetadata: {name: rules}\nspec:\n  authorizationPolicies:\n    rules:\n    - principals: {clientIds: [a]}\n      brokerResources:\n      - {method: Connect}\n",
	} {
		obj, err := config.Builtin().Decode([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := old.Apply(obj, config.ApplyOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	lk := config.Key{Kind: "BrokerListener", Name: "upgraded"}
	ak := config.Key{Kind: "BrokerAuthorization", Name: "rules"}
	before, _ := old.Get(lk)
	if _, err := os.Stat(filepath.Join(data, "resources", "brokerlistener", "upgraded.json")); err != nil {
		t.Fatalf("the old layout was not written: %v", err)
	}

	check := func(a *App) {
		t.Helper()
		got, ok := a.Resources().Get(lk)
		if !ok {
			t.Fatal("listener lost in the upgrade")
		}
		if got.Metadata.UID != before.Metadata.UID || got.Metadata.Generation != 2 || !got.Metadata.CreationTimestamp.Equal(*before.Metadata.CreationTimestamp) {
			t.Fatalf("identity changed: %+v, was %+v", got.Metadata, before.Metadata)
		}
		if _, ok := a.Resources().Get(ak); !ok {
			t.Fatal("authorization lost in the upgrade")
		}
		waitStatus(t, a, lk, config.ConditionTrue)
		if a.Addrs()["upgraded:0"] == nil {
			t.Fatalf("migrated listener not started: %v", a.Addrs())
		}
	}
	stop := func(a *App) {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := a.Stop(ctx); err != nil {
			t.Fatal(err)
		}
	}

	a := startApp(t, Config{DataDir: data})
	check(a)
	if _, err := os.Stat(filepath.Join(data, "resources")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the old directory is still in use: %v", err)
	}
	if _, err := os.Stat(filepath.Join(data, "resources.migrated", "brokerlistener", "upgraded.json")); err != nil {
		t.Fatalf("no backup of the old layout: %v", err)
	}
	// A change after the upgrade goes to the store, not to files.
	apply(t, a, listenerYAML("later", "{port: 0}"))
	stop(a)

	st, err := store.Open(filepath.Join(data, "store"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	if err := st.ScanKV(resourceBucket, nil, func(k, _ []byte) bool { keys = append(keys, string(k)); return true }); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if want := []string{"BrokerAuthorization/rules", "BrokerListener/later", "BrokerListener/upgraded"}; len(keys) != 3 || keys[0] != want[0] || keys[1] != want[1] || keys[2] != want[2] {
		t.Fatalf("store holds %q, want %q", keys, want)
	}
	if _, err := os.Stat(filepath.Join(data, "resources")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("resources written as files after the upgrade: %v", err)
	}

	// The next start reads the store; deleting through the API deletes there.
	b := startApp(t, Config{DataDir: data})
	check(b)
	if _, err := b.Resources().Delete(config.Key{Kind: "BrokerListener", Name: "later"}, ""); err != nil {
		t.Fatal(err)
	}
	stop(b)
	c := startApp(t, Config{DataDir: data})
	check(c)
	if _, ok := c.Resources().Get(config.Key{Kind: "BrokerListener", Name: "later"}); ok {
		t.Fatal("a deleted resource came back")
	}
}
