package config

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// Store errors; API handlers map them to HTTP statuses.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	// ErrConflict: the resource is owned by another source (a config file).
	ErrConflict = errors.New("conflict")
)

// Result says what Apply did.
type Result string

// Apply results, as `edgeport apply` prints them.
const (
	Created    Result = "created"
	Configured Result = "configured"
	Unchanged  Result = "unchanged"
)

// maxEvents is how many events a resource keeps.
const maxEvents = 20

// Store is the registry of resources. Resources from the config directory
// and from the API share it; those created through the API are also
// written to disk and reloaded on start. It tells watchers which key
// changed; they read the current state back (level-triggered), so a burst
// of changes costs one reconciliation.
type Store struct {
	kinds *Kinds
	p     Persister // nil keeps API resources in memory only
	log   *slog.Logger
	now   func() time.Time

	mu             sync.Mutex // guards entries, the watchers, streams and nextID
	entries        map[Key]*entry
	watchers       []func(Key)
	statusWatchers []func(Key)
	// streams are watchers that come and go (API watch requests).
	streams map[uint64]func(Key)
	nextID  uint64
}

type entry struct {
	obj    *Object // the store's copy; never handed out
	source string  // config file path; "" for the API
	events []Event
}

// NewStore returns an empty store that persists API-created resources as
// files under dir ("" for memory only). A nil log discards.
func NewStore(kinds *Kinds, dir string, log *slog.Logger) *Store {
	var p Persister
	if dir != "" {
		p = NewDirPersister(dir, kinds)
	}
	return NewStoreWith(kinds, p, log)
}

// NewStoreWith returns an empty store that persists API-created resources
// through p (nil for memory only). A nil log discards.
func NewStoreWith(kinds *Kinds, p Persister, log *slog.Logger) *Store {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store{kinds: kinds, p: p, log: log, now: time.Now, entries: make(map[Key]*entry)}
}

// Persister keeps the resources created through the API across restarts:
// the embedded store's key-value space in `edgeport serve`, files in a
// directory for tools and tests. Calls are serialised by the Store.
type Persister interface {
	// Put stores a resource's JSON encoding (without status) under k.
	Put(k Key, data []byte) error
	// Delete removes k; deleting what is not stored is not an error.
	Delete(k Key) error
	// Each calls fn with every stored resource: the key it is stored
	// under, where it is (for messages) and its encoding.
	Each(fn func(k Key, origin string, data []byte)) error
}

// Kinds returns the store's kinds.
func (s *Store) Kinds() *Kinds { return s.kinds }

// Watch registers fn to be called, outside the store's lock, with the key of
// every resource created, changed or deleted. Register before use.
func (s *Store) Watch(fn func(Key)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.watchers = append(s.watchers, fn)
}

// WatchStatus registers fn to be called, outside the store's lock, with the
// key of every resource whose status was set (the Kubernetes operator
// copies status to the custom resource). Register before use.
func (s *Store) WatchStatus(fn func(Key)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.statusWatchers = append(s.statusWatchers, fn)
}

// WatchUntilRemoved is Watch for a watcher that ends (an API watch
// stream): the returned function unregisters fn, after which it is not
// called again once a notification already under way has returned.
func (s *Store) WatchUntilRemoved(fn func(Key)) (remove func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.streams == nil {
		s.streams = map[uint64]func(Key){}
	}
	id := s.nextID
	s.nextID++
	s.streams[id] = fn
	return func() {
		s.mu.Lock()
		delete(s.streams, id)
		s.mu.Unlock()
	}
}

func (s *Store) notify(k Key) {
	s.mu.Lock()
	ws := slices.Clone(s.watchers)
	for _, fn := range s.streams {
		ws = append(ws, fn)
	}
	s.mu.Unlock()
	for _, w := range ws {
		w(k)
	}
}

// ApplyOptions qualify Apply.
type ApplyOptions struct {
	// Source is the config file defining the resource; "" for the API.
	Source string
	// CreateOnly fails with ErrExists instead of replacing.
	CreateOnly bool
	// DryRun checks and reports the result without storing anything.
	DryRun bool
	// takeover lets the config directory move a resource from one of its
	// files to another.
	takeover bool
}

// Apply creates or replaces a resource. The object is defaulted and
// validated (a *ValidationError lists every problem). Generation grows
// when the spec changes. A resource defined by a config file can be
// changed only through that file (ErrConflict otherwise); a file takes a
// resource over from the API.
func (s *Store) Apply(in *Object, opts ApplyOptions) (Result, *Object, error) {
	if s.kinds.LookupKind(in.Kind) == nil {
		return "", nil, s.kinds.Check(in)
	}
	obj := s.kinds.Clone(in)
	if err := s.kinds.Check(obj); err != nil {
		return "", nil, err
	}
	obj.Metadata.stripServerFields()
	obj.Status = nil
	if opts.Source != "" {
		if obj.Metadata.Annotations == nil {
			obj.Metadata.Annotations = map[string]string{}
		}
		obj.Metadata.Annotations[AnnotationConfigFile] = opts.Source
	}
	k := obj.Key()

	s.mu.Lock()
	if err := s.validateRefsLocked(obj); err != nil {
		s.mu.Unlock()
		return "", nil, err
	}
	res, out, err := s.applyLocked(k, obj, opts)
	s.mu.Unlock()
	if err == nil && !opts.DryRun && res != Unchanged {
		s.notify(k)
	}
	return res, out, err
}

// validateRefsLocked checks obj against the resources it references.
func (s *Store) validateRefsLocked(obj *Object) error {
	def := s.kinds.LookupKind(obj.Kind)
	if def == nil || def.ValidateRefs == nil {
		return nil
	}
	var errs Errors
	def.ValidateRefs(obj, func(k Key) (*Object, bool) {
		e := s.entries[k]
		if e == nil {
			return nil, false
		}
		return e.obj, true // read only, under s.mu
	}, &errs)
	if len(errs) > 0 {
		return &ValidationError{Kind: obj.Kind, Name: obj.Metadata.Name, Errs: errs}
	}
	return nil
}

func (s *Store) applyLocked(k Key, obj *Object, opts ApplyOptions) (Result, *Object, error) {
	old := s.entries[k]
	now := s.now().UTC().Truncate(time.Second)
	res := Created
	if old != nil {
		if opts.CreateOnly {
			return "", nil, fmt.Errorf("%s %q %w", k.Kind, k.Name, ErrExists)
		}
		if old.source != "" && old.source != opts.Source && !(opts.takeover && opts.Source != "") {
			if opts.Source == "" {
				return "", nil, fmt.Errorf("%w: %s %q is defined by config file %s; change it there", ErrConflict, k.Kind, k.Name, old.source)
			}
			return "", nil, fmt.Errorf("%w: %s %q is already defined by config file %s", ErrConflict, k.Kind, k.Name, old.source)
		}
		specChanged := !jsonEqual(old.obj.Spec, obj.Spec)
		if !specChanged && old.source == opts.Source &&
			maps.Equal(old.obj.Metadata.Labels, obj.Metadata.Labels) &&
			maps.Equal(old.obj.Metadata.Annotations, obj.Metadata.Annotations) {
			return Unchanged, s.kinds.Clone(old.obj), nil
		}
		res = Configured
		obj.Metadata.UID = old.obj.Metadata.UID
		obj.Metadata.CreationTimestamp = old.obj.Metadata.CreationTimestamp
		obj.Metadata.Generation = old.obj.Metadata.Generation
		if specChanged {
			obj.Metadata.Generation++
		}
		obj.Status = old.obj.Status
	} else {
		obj.Metadata.UID = newUID()
		obj.Metadata.CreationTimestamp = &now
		obj.Metadata.Generation = 1
		obj.Status = &Status{Conditions: []Condition{{
			Type: ConditionReady, Status: ConditionUnknown, Reason: "Pending",
			Message: "not applied yet", LastTransitionTime: now,
		}}}
	}
	if opts.DryRun {
		return res, s.kinds.Clone(obj), nil
	}
	if opts.Source == "" {
		if err := s.persist(obj); err != nil {
			return "", nil, err
		}
	} else if old != nil && old.source == "" {
		s.unpersist(k)
	}
	e := &entry{obj: obj, source: opts.Source}
	if old != nil {
		e.events = old.events
	}
	s.entries[k] = e
	switch {
	case res == Created && opts.Source == "":
		s.eventLocked(e, EventNormal, "Created", "created through the API")
	case res == Created:
		s.eventLocked(e, EventNormal, "Created", "defined by config file "+opts.Source)
	case old.source == "" && opts.Source != "":
		s.eventLocked(e, EventWarning, "ConfigFileOverride", "now defined by config file "+opts.Source+"; the copy created through the API was replaced")
	default:
		s.eventLocked(e, EventNormal, "Updated", fmt.Sprintf("generation %d", obj.Metadata.Generation))
	}
	return res, s.kinds.Clone(obj), nil
}

// Delete removes a resource. Deleting one defined by a config file through
// the API (source "") fails with ErrConflict.
func (s *Store) Delete(k Key, source string) (*Object, error) {
	s.mu.Lock()
	e := s.entries[k]
	switch {
	case e == nil:
		s.mu.Unlock()
		return nil, fmt.Errorf("%s %q %w", k.Kind, k.Name, ErrNotFound)
	case e.source != "" && e.source != source:
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %s %q is defined by config file %s; remove it there", ErrConflict, k.Kind, k.Name, e.source)
	}
	if e.source == "" {
		if err := s.removeFile(k); err != nil {
			s.mu.Unlock()
			return nil, err
		}
	}
	delete(s.entries, k)
	out := s.kinds.Clone(e.obj)
	s.mu.Unlock()
	s.notify(k)
	return out, nil
}

// Get returns a copy of a resource.
func (s *Store) Get(k Key) (*Object, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[k]
	if e == nil {
		return nil, false
	}
	return s.kinds.Clone(e.obj), true
}

// List returns copies of a kind's resources that match sel, by name.
func (s *Store) List(kind string, sel Selector) []*Object {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*Object
	for k, e := range s.entries {
		if k.Kind == kind && sel.Matches(e.obj.Metadata.Labels) {
			out = append(out, s.kinds.Clone(e.obj))
		}
	}
	slices.SortFunc(out, func(a, b *Object) int { return strings.Compare(a.Metadata.Name, b.Metadata.Name) })
	return out
}

// Keys returns every key with its source ("" for the API).
func (s *Store) Keys() map[Key]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[Key]string, len(s.entries))
	for k, e := range s.entries {
		out[k] = e.source
	}
	return out
}

// SetStatus records what the system made of generation gen of the resource
// with the given uid; a status for a resource since deleted or recreated
// is dropped. Conditions keep their lastTransitionTime while their status
// does not change, and a change of the Ready condition is recorded as an
// event.
func (s *Store) SetStatus(k Key, uid string, gen int64, st Status) {
	s.mu.Lock()
	if !s.setStatusLocked(k, uid, gen, st) {
		s.mu.Unlock()
		return
	}
	ws := slices.Clone(s.statusWatchers)
	s.mu.Unlock()
	for _, w := range ws {
		w(k)
	}
}

func (s *Store) setStatusLocked(k Key, uid string, gen int64, st Status) bool {
	e := s.entries[k]
	if e == nil || e.obj.Metadata.UID != uid || gen > e.obj.Metadata.Generation {
		return false
	}
	now := s.now().UTC().Truncate(time.Second)
	st.ObservedGeneration = gen
	for i := range st.Conditions {
		c := &st.Conditions[i]
		prev := e.obj.Status.Condition(c.Type)
		if prev != nil && prev.Status == c.Status {
			c.LastTransitionTime = prev.LastTransitionTime
		} else {
			c.LastTransitionTime = now
		}
		if c.Type == ConditionReady && (prev == nil || prev.Status != c.Status || prev.Reason != c.Reason || prev.Message != c.Message) {
			typ := EventNormal
			if c.Status != ConditionTrue {
				typ = EventWarning
			}
			s.eventLocked(e, typ, c.Reason, c.Message)
		}
	}
	e.obj.Status = &st
	return true
}

// Event records something that happened to a resource.
func (s *Store) Event(k Key, typ, reason, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.entries[k]; e != nil {
		s.eventLocked(e, typ, reason, msg)
	}
}

func (s *Store) eventLocked(e *entry, typ, reason, msg string) {
	now := s.now().UTC().Truncate(time.Second)
	if n := len(e.events); n > 0 {
		last := &e.events[n-1]
		if last.Type == typ && last.Reason == reason && last.Message == msg {
			last.Count++
			last.LastTimestamp = now
			return
		}
	}
	if len(e.events) == maxEvents {
		e.events = slices.Delete(e.events, 0, 1)
	}
	e.events = append(e.events, Event{Type: typ, Reason: reason, Message: msg, Count: 1, FirstTimestamp: now, LastTimestamp: now})
}

// Events returns a resource's recent events, oldest first.
func (s *Store) Events(k Key) ([]Event, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[k]
	if e == nil {
		return nil, false
	}
	return slices.Clone(e.events), true
}

// Load reads the resources persisted by earlier runs. A resource that no
// longer decodes is logged and skipped: one bad record must not keep the
// rest of the configuration from starting.
func (s *Store) Load() error {
	if s.p == nil {
		return nil
	}
	var loaded []Key
	err := s.p.Each(func(k Key, origin string, data []byte) {
		obj, err := s.decodeStored(k, data)
		if err != nil {
			s.log.Error("skipping stored resource", "resource", origin, "err", err)
			return
		}
		s.mu.Lock()
		if _, dup := s.entries[obj.Key()]; !dup {
			s.entries[obj.Key()] = &entry{obj: obj}
			loaded = append(loaded, obj.Key())
		}
		s.mu.Unlock()
	})
	if err != nil {
		return err
	}
	for _, k := range loaded {
		s.notify(k)
	}
	return nil
}

// decodeStored decodes a persisted resource, which must be the one stored
// under k, keeping the server-set metadata.
func (s *Store) decodeStored(k Key, data []byte) (*Object, error) {
	obj, err := s.kinds.Decode(data)
	if err != nil {
		return nil, err
	}
	if obj.Key() != k {
		return nil, fmt.Errorf("holds %s, not %s", obj.Key(), k)
	}
	// Decoding drops server-set fields from input; here they are ours.
	var meta struct {
		Metadata Metadata `json:"metadata"`
	}
	if err := json.Unmarshal(data, &meta); err != nil {
		return nil, fmt.Errorf("reading metadata: %w", err)
	}
	m := &obj.Metadata
	m.UID, m.Generation, m.CreationTimestamp = meta.Metadata.UID, meta.Metadata.Generation, meta.Metadata.CreationTimestamp
	if m.UID == "" {
		m.UID = newUID()
	}
	if m.Generation < 1 {
		m.Generation = 1
	}
	if m.CreationTimestamp == nil {
		t := s.now().UTC().Truncate(time.Second)
		m.CreationTimestamp = &t
	}
	obj.Status = &Status{Conditions: []Condition{{
		Type: ConditionReady, Status: ConditionUnknown, Reason: "Pending",
		Message: "not applied yet", LastTransitionTime: s.now().UTC().Truncate(time.Second),
	}}}
	return obj, nil
}

// persist stores an API resource so that it survives a restart.
func (s *Store) persist(obj *Object) error {
	if s.p == nil {
		return nil
	}
	c := *obj
	c.Status = nil
	data, err := json.MarshalIndent(&c, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding %s: %w", obj.Key(), err)
	}
	if err := s.p.Put(obj.Key(), append(data, '\n')); err != nil {
		return fmt.Errorf("storing %s: %w", obj.Key(), err)
	}
	return nil
}

func (s *Store) removeFile(k Key) error {
	if s.p == nil {
		return nil
	}
	if err := s.p.Delete(k); err != nil {
		return fmt.Errorf("removing stored %s: %w", k, err)
	}
	return nil
}

// unpersist drops the stored copy of a resource a config file took over.
func (s *Store) unpersist(k Key) {
	if err := s.removeFile(k); err != nil {
		s.log.Warn("removing the API copy of a resource defined by a config file", "resource", k.String(), "err", err)
	}
}

// DirPersister keeps resources as JSON files, <dir>/<kind>/<name>.json,
// each written atomically: the layout before the embedded store kept them,
// read once by the migration into it.
type DirPersister struct {
	dir   string
	kinds *Kinds
}

var _ Persister = (*DirPersister)(nil)

// NewDirPersister returns a Persister over the files under dir.
func NewDirPersister(dir string, kinds *Kinds) *DirPersister {
	return &DirPersister{dir: dir, kinds: kinds}
}

func (d *DirPersister) path(k Key) string {
	return filepath.Join(d.dir, strings.ToLower(k.Kind), k.Name+".json")
}

// Put writes the file through a synced temporary file and a rename, so a
// crash leaves the old or the new version and never half of one.
func (d *DirPersister) Put(k Key, data []byte) error {
	return WriteFileAtomic(d.path(k), data, 0o600)
}

// Delete removes the file.
func (d *DirPersister) Delete(k Key) error {
	if err := os.Remove(d.path(k)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	syncDir(filepath.Dir(d.path(k)))
	return nil
}

// Each reads every file of a known kind; unreadable ones are reported to
// fn as empty data, which fails to decode and is logged.
func (d *DirPersister) Each(fn func(k Key, origin string, data []byte)) error {
	for _, def := range d.kinds.All() {
		dir := filepath.Join(d.dir, def.Singular())
		files, err := filepath.Glob(filepath.Join(dir, "*.json"))
		if err != nil {
			return fmt.Errorf("listing %s: %w", dir, err)
		}
		for _, f := range files {
			data, _ := os.ReadFile(f)
			fn(Key{Kind: def.Kind, Name: strings.TrimSuffix(filepath.Base(f), ".json")}, f, data)
		}
	}
	return nil
}

// WriteFileAtomic writes data to path through a synced temporary file and a
// rename, creating the directory if needed.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	syncDir(dir)
	return nil
}

// syncDir makes a rename or removal in dir durable; failure only weakens
// durability, so it is not reported.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

func jsonEqual(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
}

func newUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
