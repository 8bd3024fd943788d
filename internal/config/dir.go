package config

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// debounce lets an editor's write-rename-chmod sequence, or a copy of many
// files, settle into one resync.
const debounce = 100 * time.Millisecond

// Dir keeps the store in step with the *.yaml and *.yml files of a
// directory (not its subdirectories; names starting with "." are ignored,
// which also skips the ..data links of a mounted Kubernetes ConfigMap).
//
// Each sync reads every file and applies the whole set: a resource that
// appears in no file any more is deleted. A document that does not
// validate is reported (file, line, field path) and skipped, and the
// resource it names keeps its last good version; likewise every resource
// of a file that cannot be read or parsed. A resource defined twice keeps
// the definition of the file first in name order.
type Dir struct {
	path  string
	store *Store
	log   *slog.Logger

	mu       sync.Mutex // serializes syncs; guards problems
	problems []Problem
}

// Problem is one reason a document of the directory was not applied.
type Problem struct {
	File     string `json:"file"`
	Line     int    `json:"line,omitempty"`
	Resource string `json:"resource,omitempty"` // Kind/name when known
	Message  string `json:"message"`
}

func (p Problem) String() string {
	s := p.File
	if p.Line > 0 {
		s += fmt.Sprintf(":%d", p.Line)
	}
	if p.Resource != "" {
		s += " (" + p.Resource + ")"
	}
	return s + ": " + p.Message
}

// NewDir returns a source for path, which must be a directory.
func NewDir(path string, store *Store, log *slog.Logger) (*Dir, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("config dir %s: %w", path, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("config dir: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("config dir %s: not a directory", path)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Dir{path: abs, store: store, log: log}, nil
}

// Path returns the directory's absolute path.
func (d *Dir) Path() string { return d.path }

// Problems returns what the last sync could not apply.
func (d *Dir) Problems() []Problem {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.problems)
}

// Files lists the directory's resource files, sorted.
func (d *Dir) Files() ([]string, error) {
	ents, err := os.ReadDir(d.path)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, ".") || !(strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml")) {
			continue
		}
		p := filepath.Join(d.path, n)
		if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
			continue // a dangling link or a directory named x.yaml
		}
		out = append(out, p)
	}
	slices.Sort(out)
	return out, nil
}

// Sync applies the directory's current content and returns the problems.
func (d *Dir) Sync() []Problem {
	d.mu.Lock()
	defer d.mu.Unlock()
	var problems []Problem
	files, err := d.Files()
	if err != nil {
		// Without a listing nothing can be told apart from a deletion.
		problems = append(problems, Problem{File: d.path, Message: err.Error()})
		d.report(problems)
		return problems
	}
	kinds := d.store.Kinds()
	desired := map[Key]*Object{}
	owner := map[Key]string{}
	keep := map[Key]bool{}         // invalid now: the last good version stays
	keepFiles := map[string]bool{} // unreadable or unparsable files
	warnings := map[Key]Errors{}   // fields accepted but not applied
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			problems = append(problems, Problem{File: f, Message: err.Error()})
			keepFiles[f] = true
			continue
		}
		docs, err := kinds.DecodeAll(data)
		if err != nil {
			problems = append(problems, Problem{File: f, Message: err.Error()})
			keepFiles[f] = true
		}
		for _, doc := range docs {
			res := doc.Kind + "/" + doc.Name
			if doc.Kind == "" || doc.Name == "" {
				res = ""
			}
			if doc.Err != nil {
				var ve *ValidationError
				if errors.As(doc.Err, &ve) {
					for _, fe := range ve.Errs {
						line := fe.Line
						if line == 0 {
							line = doc.Line
						}
						problems = append(problems, Problem{File: f, Line: line, Resource: res, Message: fe.Error()})
					}
				} else {
					problems = append(problems, Problem{File: f, Line: doc.Line, Resource: res, Message: doc.Err.Error()})
				}
				if def := kinds.LookupKind(doc.Kind); def != nil && doc.Name != "" {
					keep[Key{def.Kind, doc.Name}] = true
				}
				continue
			}
			k := doc.Object.Key()
			if prev, dup := owner[k]; dup {
				problems = append(problems, Problem{File: f, Line: doc.Line, Resource: k.String(),
					Message: "already defined in " + prev + "; this definition is ignored"})
				continue
			}
			desired[k], owner[k] = doc.Object, f
			if len(doc.Warnings) > 0 {
				warnings[k] = doc.Warnings
			}
		}
	}

	keys := make([]Key, 0, len(desired))
	for k := range desired {
		keys = append(keys, k)
	}
	// Kinds that others refer to at apply time (a Dataflow's schemaRef)
	// go first, so files may define them in any order.
	slices.SortFunc(keys, func(a, b Key) int {
		if c := ApplyRank(a.Kind) - ApplyRank(b.Kind); c != 0 {
			return c
		}
		return strings.Compare(a.String(), b.String())
	})
	for _, k := range keys {
		res, _, err := d.store.Apply(desired[k], ApplyOptions{Source: owner[k], takeover: true})
		if err != nil {
			problems = append(problems, Problem{File: owner[k], Resource: k.String(), Message: err.Error()})
			continue
		}
		if res != Unchanged {
			d.log.Info("resource "+string(res), "resource", k.String(), "file", owner[k])
			// Said when the resource changes, not at every sync.
			for _, w := range warnings[k] {
				d.log.Warn("field ignored", "resource", k.String(), "file", owner[k], "line", w.Line, "field", w.Path, "reason", w.Msg)
			}
		}
	}
	for k, src := range d.store.Keys() {
		if src == "" || filepath.Dir(src) != d.path || desired[k] != nil || keep[k] || keepFiles[src] {
			continue
		}
		if _, err := d.store.Delete(k, src); err == nil {
			d.log.Info("resource deleted", "resource", k.String(), "file", src)
		}
	}
	for _, p := range problems {
		if p.Resource != "" {
			if kind, name, ok := strings.Cut(p.Resource, "/"); ok {
				if def := kinds.LookupKind(kind); def != nil {
					d.store.Event(Key{def.Kind, name}, EventWarning, "InvalidConfig", p.String())
				}
			}
		}
	}
	d.report(problems)
	return problems
}

// report logs the problems that are new since the last sync, so that an
// unrelated edit does not repeat every old complaint.
func (d *Dir) report(problems []Problem) {
	old := map[string]bool{}
	for _, p := range d.problems {
		old[p.String()] = true
	}
	for _, p := range problems {
		if !old[p.String()] {
			d.log.Error("config file problem: not applied", "problem", p.String())
		}
	}
	d.problems = problems
}

// Watch syncs, then resyncs whenever the directory changes, until ctx ends.
func (d *Dir) Watch(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching %s: %w", d.path, err)
	}
	defer w.Close()
	if err := w.Add(d.path); err != nil {
		return fmt.Errorf("watching %s: %w", d.path, err)
	}
	// Changes made before the watch began are seen by one more sync.
	d.Sync()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			d.log.Debug("config dir changed", "event", ev.String())
			timer.Reset(debounce)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			// An overflow loses events: a full resync recovers.
			d.log.Warn("watching config dir", "err", err)
			timer.Reset(debounce)
		case <-timer.C:
			d.Sync()
		}
	}
}
