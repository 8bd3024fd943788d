package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/edgeport/edgeport/internal/lifecycle"
	"github.com/edgeport/edgeport/internal/lograte"
)

// SyncPolicy says when a commit counts as durable.
type SyncPolicy string

const (
	// SyncAlways commits whatever is queued as soon as the committer is free
	// and fsyncs the WAL before any callback runs.
	SyncAlways SyncPolicy = "always"
	// SyncBatch is group commit: the committer keeps collecting Txns while
	// producers keep queueing them (yielding the processor to let them),
	// for at most BatchInterval after the group's first Txn or BatchMaxOps
	// operations, then makes the whole group durable with one fsync before
	// the callbacks. Safe against kill -9 and power loss. The default.
	SyncBatch SyncPolicy = "batch"
	// SyncNone never fsyncs. UNSAFE: acknowledged writes can be lost on a
	// crash; meant for tests and throwaway deployments.
	SyncNone SyncPolicy = "none"
)

// Defaults applied by Open to zero Options fields.
const (
	DefaultBatchInterval = 2 * time.Millisecond
	DefaultBatchMaxOps   = 4096
	DefaultQueueSize     = 4096
	DefaultMemTableBytes = 4 << 20
	DefaultCacheBytes    = 8 << 20
)

// Options configures a Store. The zero value is usable.
type Options struct {
	Sync SyncPolicy // default SyncBatch
	// BatchInterval bounds how long SyncBatch collects a group; default
	// 2ms, negative = commit as soon as the queue is empty (like SyncAlways).
	// The committer never sleeps for it: an idle store commits at once.
	BatchInterval time.Duration
	// BatchMaxOps ends a group early once it holds this many operations.
	BatchMaxOps int
	// QueueSize bounds the Txns waiting for the committer; Commit blocks
	// while the queue is full.
	QueueSize int
	// ReserveBytes is the free space kept on the store's file system:
	// Txns that add data are refused with ErrDiskFull while less is free,
	// whoever used the space, and half of it is held in a reserve file
	// released when the disk fills anyway (see space.go). 0 picks
	// DefaultReserveBytes (less on a small file system); negative
	// disables the protection.
	ReserveBytes int64
	// QuotaBytes caps disk usage for Txns that add data; 0 = unlimited.
	// It is a soft cap: a Txn is refused when the last measured usage plus
	// the bytes committed since would pass it, and a memtable flush or a
	// compaction may briefly hold data twice. Usage includes Pebble's WAL
	// files (the live ones plus up to three kept for reuse), about three to
	// four MemTableBytes even for an empty store, so set the quota well above
	// that. Pebble reports the WAL being written at the size it had when
	// opened, and each measurement replaces the bytes counted since the
	// last: until its memtable is flushed a store may take up to about one
	// MemTableBytes past the quota (measured: about 1 MB accepted with 256
	// KiB of headroom on a fresh store). Counting that WAL's growth is not
	// done yet: Full would then clear at the first byte under the quota
	// after a refusal.
	QuotaBytes int64
	// MemTableBytes and CacheBytes size Pebble's memtable and block cache.
	MemTableBytes int64
	CacheBytes    int64
	// Logger receives store and Pebble messages (Pebble's routine ones at
	// Debug); nil discards them.
	Logger *slog.Logger
}

var (
	// ErrCorrupt marks damaged store files or records; the error text names
	// the file or key.
	ErrCorrupt = errors.New("store: corrupt data")
	// ErrQuotaExceeded is passed to a Commit callback when the Txn adds data
	// and the store is at its quota. Nothing of the Txn is written.
	ErrQuotaExceeded = errors.New("store: disk quota exceeded")
	// ErrClosed is returned by operations on a Store that is not open
	// (before Start, or after Stop or Close). Close must not
	// run concurrently with Load, GetKV, ScanKV or Compact.
	ErrClosed = errors.New("store: closed")
	// ErrInvalid is passed to a Commit callback when a Txn holds a record
	// the store cannot represent (a NUL in a client ID or bucket, QoS 3).
	ErrInvalid = errors.New("store: invalid record")
)

// diskSlowThreshold is when a disk operation is reported as slow (Pebble's
// own default).
const diskSlowThreshold = 5 * time.Second

// formatVersion is written under metaFormatKey; bump it when the key
// layout or a record version changes incompatibly.
const formatVersion = 1

var _ lifecycle.Component = (*Store)(nil)

// Store is the durable state of one broker. Its methods are safe for
// concurrent use.
type Store struct {
	db       *pebble.DB
	fsCloser io.Closer // ends the disk-health checker of db's file system
	dir      string
	opts     Options
	log      *slog.Logger

	// mu orders Commit's queue send against Close's close(queue), and
	// bg.Add against Close's bg.Wait; it guards closed and db's opening.
	mu     sync.RWMutex
	closed bool           // not open: before Start or after Close
	bg     sync.WaitGroup // reclaim goroutines
	// shut is closed for the read paths, which take no lock.
	shut   atomic.Bool
	queue  chan *Txn
	exited chan struct{}

	txnPool sync.Pool
	sync    atomic.Pointer[SyncPolicy] // in force; the committer reads it per group

	commits   atomic.Uint64
	rejected  atomic.Uint64
	failed    atomic.Uint64
	batches   atomic.Uint64
	syncs     atomic.Uint64
	bytes     atomic.Uint64
	lastUsage atomic.Int64
	full      atomic.Bool // the quota refused a write; cleared when a measurement shows room
	// fullChecked and lastFlush (UnixNano) pace Full's re-measurements and flushes.
	fullChecked, lastFlush atomic.Int64
	compacting             atomic.Bool // a reclaim is running

	reserve int64            // resolved ReserveBytes; 0 = no disk protection
	ballast atomic.Bool      // the reserve file is in place
	errs    *lograte.Limiter // repeated errors (a full disk) are logged once a minute

	c committer
}

// New validates opts and returns a Store for dir that is not open yet:
// Start opens it, Stop closes it. Nothing touches the disk before Start.
func New(dir string, opts Options) (*Store, error) {
	if err := normalize(&opts); err != nil {
		return nil, err
	}
	s := &Store{
		dir:    dir,
		opts:   opts,
		log:    opts.Logger,
		queue:  make(chan *Txn, opts.QueueSize),
		exited: make(chan struct{}),
		closed: true, // until Start
	}
	s.shut.Store(true)
	s.sync.Store(&opts.Sync)
	s.txnPool.New = func() any { return newTxn(s) }
	s.errs = lograte.New(s.log, errInterval)
	return s, nil
}

// SetSync changes the sync policy; it applies from the next commit group.
func (s *Store) SetSync(p SyncPolicy) error {
	o := Options{Sync: p}
	if err := normalize(&o); err != nil {
		return err
	}
	s.sync.Store(&o.Sync)
	return nil
}

// Sync returns the sync policy in force.
func (s *Store) Sync() SyncPolicy { return *s.sync.Load() }

// Open creates a Store for dir and starts it: New and Start in one.
func Open(dir string, opts Options) (*Store, error) {
	s, err := New(dir, opts)
	if err != nil {
		return nil, err
	}
	if err := s.Start(context.Background()); err != nil {
		return nil, err
	}
	return s, nil
}

// Start opens or creates the store in its directory and starts the
// committer. A Store is started once; on failure nothing stays open.
func (s *Store) Start(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db != nil {
		return errors.New("store: already started")
	}
	if err := os.MkdirAll(s.dir, dirPerm); err != nil {
		return fmt.Errorf("store: create %s: %w", s.dir, err)
	}
	if err := restrict(s.dir); err != nil {
		return err
	}
	s.reserve = reserveFor(s.dir, s.opts.ReserveBytes)
	if err := s.prepareSpace(); err != nil {
		return err
	}
	po := s.pebbleOptions()
	// The disk-health wrapper Pebble would add itself runs a ticker
	// goroutine that Pebble leaves running when Open fails; owning the
	// wrapper lets Start and Close end it in every case.
	var fsCloser io.Closer
	po.FS, fsCloser = vfs.WithDiskHealthChecks(po.FS, diskSlowThreshold, nil, func(info vfs.DiskSlowInfo) {
		s.log.Warn("store: slow disk", "path", info.Path, "op", info.OpType.String(), "took", info.Duration.String())
	})
	db, err := pebble.Open(s.dir, po)
	if err != nil {
		_ = fsCloser.Close()
		switch {
		case damagedOnOpen(err):
			return fmt.Errorf("%w: %s: %w", ErrCorrupt, s.dir, err)
		case isNoSpace(err):
			return fmt.Errorf("%w: %s: %w", ErrNoSpace, s.dir, err)
		}
		return s.wrapErr("open", err)
	}
	s.db, s.fsCloser = db, fsCloser
	if err := s.checkFormat(); err != nil {
		_ = db.Close()
		_ = fsCloser.Close()
		s.db = nil
		return err
	}
	s.lastUsage.Store(int64(db.Metrics().DiskSpaceUsage()))
	if !s.makeBallast() {
		s.full.Store(true)
		s.log.Warn("store: less free space than the reserve: new data is refused until space is freed",
			"dir", s.dir, "free_bytes", freeBytes(s.dir), "reserve_bytes", s.reserve)
	}
	s.c.init(s)
	s.closed = false
	s.shut.Store(false)
	go s.c.run()
	return nil
}

// Stop closes the store (see Close): everything queued is committed first.
// The committer cannot be cut short, so ctx is not consulted.
func (s *Store) Stop(context.Context) error {
	err := s.Close()
	if errors.Is(err, ErrClosed) {
		return nil // never started, or already closed
	}
	return err
}

func normalize(o *Options) error {
	switch o.Sync {
	case "":
		o.Sync = SyncBatch
	case SyncAlways, SyncBatch, SyncNone:
	default:
		return fmt.Errorf("store: unknown sync policy %q (want always, batch or none)", o.Sync)
	}
	if o.BatchInterval == 0 {
		o.BatchInterval = DefaultBatchInterval
	}
	if o.BatchMaxOps <= 0 {
		o.BatchMaxOps = DefaultBatchMaxOps
	}
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.MemTableBytes <= 0 {
		o.MemTableBytes = DefaultMemTableBytes
	}
	if o.CacheBytes <= 0 {
		o.CacheBytes = DefaultCacheBytes
	}
	if o.QuotaBytes < 0 {
		return fmt.Errorf("store: negative quota %d", o.QuotaBytes)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

func (s *Store) pebbleOptions() *pebble.Options {
	po := &pebble.Options{
		FormatMajorVersion: pebble.FormatNewest,
		CacheSize:          s.opts.CacheBytes,
		MemTableSize:       uint64(s.opts.MemTableBytes),
		// Two memtables: one filling while the other flushes. More would only
		// hold more RAM on a small box.
		MemTableStopWritesThreshold: 2,
		MaxOpenFiles:                256,
		Logger:                      pebbleLogger{s.opts.Logger, s.errs},
		FS:                          vfs.OnDiskFull(privateFS{vfs.Default}, s.diskFull),
		EventListener: &pebble.EventListener{
			BackgroundError: func(err error) {
				// A failing flush or compaction is retried, and may fail
				// again many times a second (a full disk).
				s.errs.Log(slog.LevelError, "background", "store: background error", "err", errors.Unwrap(err), "detail", firstLine(err))
			},
			DataCorruption: func(info pebble.DataCorruptionInfo) {
				s.log.Error("store: data corruption", "path", info.Path, "err", info.Details)
			},
			WriteStallBegin: func(info pebble.WriteStallBeginInfo) {
				s.log.Warn("store: write stall", "reason", info.Reason)
			},
		},
	}
	// Queue entries are deleted soon after they are written, so most
	// sstables are mostly tombstones. A lower threshold for tombstone-dense
	// compactions makes Pebble drop them (and the space they pin) sooner.
	po.Experimental.TombstoneDenseCompactionThreshold = 0.05
	return po
}

// checkFormat stamps a new store with formatVersion and refuses one written
// by an incompatible version.
func (s *Store) checkFormat() error {
	v, closer, err := s.db.Get([]byte(metaFormatKey))
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		if err := s.db.Set([]byte(metaFormatKey), []byte{formatVersion}, pebble.Sync); err != nil {
			return s.wrapErr("write format version", err)
		}
		return nil
	case err != nil:
		return s.wrapErr("read format version", err)
	}
	defer closer.Close()
	if len(v) != 1 {
		return fmt.Errorf("%w: %s: %s: format version record of %d bytes", ErrCorrupt, s.dir, describeKey([]byte(metaFormatKey)), len(v))
	}
	if v[0] != formatVersion {
		return fmt.Errorf("store: %s has format version %d, this build reads %d", s.dir, v[0], formatVersion)
	}
	return nil
}

// wrapErr marks Pebble's corruption errors (checksum mismatches, torn
// MANIFEST records, missing or truncated sstables) with ErrCorrupt so that
// callers can tell damage from transient I/O errors.
func (s *Store) wrapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if isCorruption(err) {
		return fmt.Errorf("%w: %s: %s: %w", ErrCorrupt, s.dir, op, err)
	}
	return fmt.Errorf("store: %s: %s: %w", s.dir, op, err)
}

func isCorruption(err error) bool {
	return pebble.IsCorruptionError(err) || errors.Is(err, io.ErrUnexpectedEOF)
}

// damagedOnOpen also counts the failures of Pebble's open-time consistency
// check, which Pebble does not mark as corruption: a table the MANIFEST
// names is missing (the directory itself exists, Open created it) or has
// another size than the MANIFEST recorded. Pebble offers no error value
// for the size mismatch, hence the text match.
func damagedOnOpen(err error) bool {
	return isCorruption(err) || errors.Is(err, fs.ErrNotExist) ||
		strings.Contains(err.Error(), "object size mismatch")
}

// Close waits for every queued Txn to be committed and their callbacks to
// run, and for a running reclaim, then closes the database. It returns
// ErrClosed when the store is not open.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.closed = true
	s.shut.Store(true)
	close(s.queue)
	s.mu.Unlock()
	<-s.exited
	s.bg.Wait()
	err := s.db.Close()
	_ = s.fsCloser.Close()
	return s.wrapErr("close", err)
}

// LoadFuncs receives the store's contents during Load. A nil field skips
// that kind of record. Returning an error stops Load with that error.
type LoadFuncs struct {
	// Session gets each session with its entries in Seq order and its
	// inbound QoS 2 packet IDs in ascending order. The slices and all they
	// reference are the callee's to keep.
	Session func(s *Session, entries []Entry, inbound []uint16) error
	// Retained gets each retained message; the callee may keep it.
	Retained func(m *Message) error
}

// Load walks every session (in client ID byte order) and then every
// retained message (in topic byte order). Entries or inbound IDs with no
// session record (never written by a correct caller) are logged and skipped.
// A damaged file or record stops Load with an error wrapping ErrCorrupt.
func (s *Store) Load(fn LoadFuncs) error {
	if s.shut.Load() {
		return ErrClosed
	}
	if err := s.loadClients(fn.Session); err != nil {
		return err
	}
	return s.loadRetained(fn.Retained)
}

func (s *Store) loadClients(fn func(*Session, []Entry, []uint16) error) error {
	if fn == nil {
		return nil
	}
	it, err := s.db.NewIter(&pebble.IterOptions{
		LowerBound: []byte(clientSpanStart),
		UpperBound: []byte(clientSpanEnd),
	})
	if err != nil {
		return s.wrapErr("load sessions", err)
	}
	in := &interner{m: make(map[string]string)}
	var (
		cur     []byte // client ID of the group being collected
		sess    *Session
		entries []Entry
		inbound []uint16
	)
	flush := func() error {
		if cur == nil {
			return nil
		}
		if sess == nil {
			s.log.Warn("store: skipping records without a session", "client", string(cur),
				"entries", len(entries), "inbound", len(inbound))
			return nil
		}
		return fn(sess, entries, inbound)
	}
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		ck, ok := parseClientKey(k)
		if !ok {
			_ = it.Close()
			return fmt.Errorf("%w: %s: unrecognised %s", ErrCorrupt, s.dir, describeKey(k))
		}
		if cur == nil || !bytes.Equal(cur, ck.clientID) {
			if err := flush(); err != nil {
				_ = it.Close()
				return err
			}
			cur = append(cur[:0:0], ck.clientID...)
			sess, entries, inbound = nil, nil, nil
		}
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return s.wrapErr("load "+describeKey(k), err)
		}
		switch ck.tag {
		case tagEntry:
			entries = append(entries, Entry{})
			e := &entries[len(entries)-1]
			if err := decodeEntry(v, e, in); err != nil {
				_ = it.Close()
				return s.corruptRecord(k, err)
			}
			e.Seq = ck.seq
		case tagInbound:
			if len(v) != 0 {
				_ = it.Close()
				return s.corruptRecord(k, errBadRecord)
			}
			inbound = append(inbound, ck.packetID)
		case tagSession:
			sess = new(Session)
			if err := decodeSession(v, sess, in); err != nil {
				_ = it.Close()
				return s.corruptRecord(k, err)
			}
			sess.ClientID = string(ck.clientID)
		}
	}
	if err := it.Close(); err != nil {
		return s.wrapErr("load sessions", err)
	}
	return flush()
}

func (s *Store) loadRetained(fn func(*Message) error) error {
	if fn == nil {
		return nil
	}
	it, err := s.db.NewIter(&pebble.IterOptions{
		LowerBound: []byte(retainedSpanStart),
		UpperBound: []byte(retainedSpanEnd),
	})
	if err != nil {
		return s.wrapErr("load retained", err)
	}
	in := &interner{m: make(map[string]string)}
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return s.wrapErr("load "+describeKey(k), err)
		}
		m := new(Message)
		if err := decodeMessage(v, m, in); err != nil {
			_ = it.Close()
			return s.corruptRecord(k, err)
		}
		if m.Topic != string(k[len(retainedSpanStart):]) {
			_ = it.Close()
			return s.corruptRecord(k, errors.New("topic differs from key"))
		}
		if err := fn(m); err != nil {
			_ = it.Close()
			return err
		}
	}
	if err := it.Close(); err != nil {
		return s.wrapErr("load retained", err)
	}
	return nil
}

func (s *Store) corruptRecord(k []byte, err error) error {
	return fmt.Errorf("%w: %s: %s: %w", ErrCorrupt, s.dir, describeKey(k), err)
}

// GetKV returns a copy of the value stored under bucket/key.
func (s *Store) GetKV(bucket string, key []byte) ([]byte, bool, error) {
	if s.shut.Load() {
		return nil, false, ErrClosed
	}
	if !validComponent(bucket) {
		return nil, false, fmt.Errorf("%w: NUL in bucket %q", ErrInvalid, bucket)
	}
	k := appendKVKey(nil, bucket, key)
	v, closer, err := s.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, s.wrapErr("get "+describeKey(k), err)
	}
	out := bytes.Clone(v)
	if out == nil {
		out = []byte{}
	}
	return out, true, closer.Close()
}

// ScanKV calls fn for each key of bucket that starts with prefix, in key
// order, until fn returns false. k and v are only valid during the call.
func (s *Store) ScanKV(bucket string, prefix []byte, fn func(k, v []byte) bool) error {
	if s.shut.Load() {
		return ErrClosed
	}
	if !validComponent(bucket) {
		return fmt.Errorf("%w: NUL in bucket %q", ErrInvalid, bucket)
	}
	bp := appendKVPrefix(nil, bucket)
	lower := append(bytes.Clone(bp), prefix...)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd(lower)})
	if err != nil {
		return s.wrapErr("scan bucket "+bucket, err)
	}
	for it.First(); it.Valid(); it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return s.wrapErr("scan "+describeKey(it.Key()), err)
		}
		if !fn(it.Key()[len(bp):], v) {
			break
		}
	}
	return s.wrapErr("scan bucket "+bucket, it.Close())
}

// Usage returns the bytes the store occupies on disk: WAL, sstables,
// MANIFEST and OPTIONS, including files awaiting deletion.
func (s *Store) Usage() int64 {
	if s.shut.Load() {
		return s.lastUsage.Load()
	}
	u := int64(s.db.Metrics().DiskSpaceUsage())
	s.lastUsage.Store(u)
	return u
}

// Full reports whether the store is at its quota: the last write that
// added data was refused and no later measurement found room. Callers use it
// to refuse work up front rather than have a commit fail after the fact.
//
// While full it re-measures at most every few milliseconds and asks Pebble
// to flush its memtable: the log of a queue that has since drained holds
// puts and their deletes, which only become reclaimable space once flushed
// into tables that compaction can drop.
func (s *Store) Full() bool {
	if !s.full.Load() {
		return false
	}
	now := time.Now().UnixNano()
	last := s.fullChecked.Load()
	if now-last < int64(quotaRecheck) || !s.fullChecked.CompareAndSwap(last, now) || s.shut.Load() {
		return true
	}
	overQuota := s.opts.QuotaBytes > 0 && quotaUsage(s.db.Metrics()) >= s.opts.QuotaBytes
	if !overQuota && s.hasRoom() {
		s.full.Store(false)
		s.errs.Reset("enospc")
		s.log.Info("store: space available again: taking new data", "dir", s.dir)
		return false
	}
	if overQuota && now-s.lastFlush.Load() > int64(time.Second) && s.compacting.CompareAndSwap(false, true) {
		s.lastFlush.Store(now)
		s.mu.RLock()
		if s.closed {
			s.compacting.Store(false)
		} else {
			s.bg.Add(1) // under s.mu, so that Close's Wait comes after
			go s.reclaim()
		}
		s.mu.RUnlock()
	}
	return true
}

// reclaim flushes and compacts the store so that consumed data (puts
// cancelled by deletes) stops counting against the quota, then measures
// again. Small stores would otherwise wait for a compaction Pebble has no
// reason to start. Close waits for it (s.bg).
func (s *Store) reclaim() {
	defer s.bg.Done()
	defer s.compacting.Store(false)
	if err := s.db.Flush(); err != nil {
		s.log.Warn("flushing a full store", "err", err)
		return
	}
	if err := s.db.Compact(context.Background(), []byte{0}, []byte{0xff}, true); err != nil {
		s.log.Warn("compacting a full store", "err", err)
		return
	}
	if quotaUsage(s.db.Metrics()) < s.opts.QuotaBytes && s.hasRoom() {
		s.full.Store(false)
	}
}

// hasRoom reports whether the file system has the reserve free, the
// reserve file in place (it is recreated when there is room for it).
func (s *Store) hasRoom() bool {
	if s.reserve == 0 {
		return true
	}
	if !s.makeBallast() {
		return false
	}
	free := freeBytes(s.dir)
	return free < 0 || free >= s.reserve
}

// firstLine is an error's message without the stack trace Pebble's errors
// print after it.
func firstLine(err error) string {
	msg := err.Error()
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		return msg[:i]
	}
	return msg
}

// Compact flushes the memtable and compacts the whole key space, dropping
// deleted data. Pebble compacts on its own; this is for tests, tools and
// operators who want the space back now.
func (s *Store) Compact(ctx context.Context) error {
	if s.shut.Load() {
		return ErrClosed
	}
	if err := s.db.Flush(); err != nil {
		return s.wrapErr("flush", err)
	}
	if err := s.db.Compact(ctx, []byte{0}, []byte{0xff}, true); err != nil {
		return s.wrapErr("compact", err)
	}
	return nil
}

// Metrics is a snapshot of the store's counters.
type Metrics struct {
	Commits      uint64  // Txns made durable
	Rejected     uint64  // Txns refused: quota or invalid record
	Failed       uint64  // Txns whose batch failed to commit
	Batches      uint64  // Pebble batches committed (commit groups)
	Syncs        uint64  // WAL fsyncs requested
	Bytes        uint64  // batch bytes committed
	AvgBatchTxns float64 // Commits / Batches
	DiskBytes    int64   // last measured disk usage
	Queued       int     // Txns waiting for the committer
}

// Metrics returns the current counters.
func (s *Store) Metrics() Metrics {
	m := Metrics{
		Commits:   s.commits.Load(),
		Rejected:  s.rejected.Load(),
		Failed:    s.failed.Load(),
		Batches:   s.batches.Load(),
		Syncs:     s.syncs.Load(),
		Bytes:     s.bytes.Load(),
		DiskBytes: s.lastUsage.Load(),
		Queued:    len(s.queue),
	}
	if m.Batches > 0 {
		m.AvgBatchTxns = float64(m.Commits) / float64(m.Batches)
	}
	return m
}

// pebbleLogger sends Pebble's log lines to slog; its chatty informational
// lines (flushes, compactions) go to Debug.
type pebbleLogger struct {
	l    *slog.Logger
	errs *lograte.Limiter
}

func (p pebbleLogger) Infof(format string, args ...any) {
	if p.l.Enabled(context.Background(), slog.LevelDebug) {
		p.l.Debug("pebble: " + fmt.Sprintf(format, args...))
	}
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	msg := "pebble: " + fmt.Sprintf(format, args...)
	if p.errs != nil {
		// Pebble repeats some errors as long as their cause lasts.
		p.errs.Log(slog.LevelError, format, firstLine(errors.New(msg)))
		return
	}
	p.l.Error(msg)
}

// Fatalf is called for invariant violations after which Pebble cannot go
// on; panicking lets the process's own crash handling take over.
func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := "pebble: " + fmt.Sprintf(format, args...)
	p.l.Error(msg)
	panic(msg)
}
