package app

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgeport/edgeport/internal/config"
	"github.com/edgeport/edgeport/internal/store"
)

// resourceBucket is the store's key-value bucket of API-created
// resources; a key is "<Kind>/<name>", a value the resource's JSON
// without status.
const resourceBucket = "resources"

// storedResources keeps API-created resources in the store's key-value
// space: each change is one durable transaction, like the broker's state.
type storedResources struct{ st *store.Store }

var _ config.Persister = storedResources{}

func resourceKey(k config.Key) []byte { return []byte(k.Kind + "/" + k.Name) }

func (p storedResources) Put(k config.Key, data []byte) error {
	tx := p.st.NewTxn()
	tx.PutKV(resourceBucket, resourceKey(k), data)
	return p.st.CommitSync(tx)
}

func (p storedResources) Delete(k config.Key) error {
	tx := p.st.NewTxn()
	tx.DeleteKV(resourceBucket, resourceKey(k))
	return p.st.CommitSync(tx)
}

func (p storedResources) Each(fn func(k config.Key, origin string, data []byte)) error {
	return p.st.ScanKV(resourceBucket, nil, func(key, v []byte) bool {
		kind, name, _ := strings.Cut(string(key), "/")
		fn(config.Key{Kind: kind, Name: name}, "store:"+resourceBucket+"/"+string(key), bytes.Clone(v))
		return true
	})
}

// migrate moves API-created resources from the files under
// <data-dir>/resources, where versions before the store kept them, into
// the store, in one transaction, then renames the directory to
// resources.migrated (kept as a backup; nothing reads it again). A crash
// before the rename repeats the move at the next start, which writes the
// same values again.
func (r *resources) migrate() error {
	st := r.a.store
	if st == nil || r.a.cfg.DataDir == "" {
		return nil
	}
	old := filepath.Join(r.a.cfg.DataDir, "resources")
	if _, err := os.Stat(old); errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("migrating resources: %w", err)
	}
	tx := st.NewTxn()
	n := 0
	err := config.NewDirPersister(old, r.store.Kinds()).Each(func(k config.Key, origin string, data []byte) {
		if len(data) == 0 {
			r.log.Error("not migrating an unreadable resource file", "file", origin)
			return
		}
		tx.PutKV(resourceBucket, resourceKey(k), data)
		n++
	})
	if err != nil {
		tx.Discard()
		return fmt.Errorf("migrating resources: %w", err)
	}
	if err := st.CommitSync(tx); err != nil {
		return fmt.Errorf("migrating resources into the store: %w", err)
	}
	kept := old + ".migrated"
	if _, err := os.Stat(kept); err == nil {
		kept = fmt.Sprintf("%s.migrated-%d", old, time.Now().Unix())
	}
	if err := os.Rename(old, kept); err != nil {
		return fmt.Errorf("migrating resources: %w", err)
	}
	r.log.Info("moved API-created resources from files into the store", "resources", n, "from", old, "kept_as", kept)
	return nil
}
