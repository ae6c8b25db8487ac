package preprocess

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
	"golang.org/x/sync/errgroup"
)

// ErrVersionNotFound reports a model version the Store has no directory for.
var ErrVersionNotFound = errors.New("model version directory not found")

// StoreOptions configure a Store. The zero value uses every default.
type StoreOptions struct {
	// PollInterval is the time between scans of the root. Default 2s. Scans that
	// take long (tens of thousands of models) stretch it: see scanDuty.
	PollInterval time.Duration
	// Concurrency bounds how many specs load in parallel. Default 4.
	Concurrency int
	// Logger receives load failures and version changes. Nil discards.
	Logger *slog.Logger
	// MeterProvider receives the Store's metrics (see metrics.go). Nil: no-op.
	MeterProvider metric.MeterProvider
}

func (o StoreOptions) withDefaults() StoreOptions {
	if o.PollInterval <= 0 {
		o.PollInterval = 2 * time.Second
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 4
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Entry is one model version the Store has seen: its pipeline, or why it has none.
type Entry struct {
	Model   string
	Version int64
	// Dir is the version directory.
	Dir string
	// Pipeline is nil when Err is set.
	Pipeline *Pipeline
	// Err wraps ErrNoSpec or ErrSpec when the version has no usable spec.
	Err error
	// LoadedAt is when the spec was (last) read.
	LoadedAt time.Time

	stamp stamp
}

// stamp identifies what was loaded, to reload only when a version directory or
// its spec file is replaced.
type stamp struct {
	dir, spec fs.FileInfo // spec is nil when there was no spec file
}

func (a stamp) same(b stamp) bool {
	if a.dir == nil || b.dir == nil || !os.SameFile(a.dir, b.dir) {
		return false
	}
	if (a.spec == nil) != (b.spec == nil) {
		return false
	}
	if a.spec == nil {
		return true
	}
	return os.SameFile(a.spec, b.spec) && a.spec.Size() == b.spec.Size() && a.spec.ModTime().Equal(b.spec.ModTime())
}

// Snapshot is an immutable view of every model version under the root.
type Snapshot struct {
	generation uint64
	models     map[string]map[int64]*Entry
	versions   map[string][]int64  // model -> sorted versions of models (read on every routing rebuild)
	dirs       map[string]dirStamp // model directories as last read
}

func sortedVersions(models map[string]map[int64]*Entry) map[string][]int64 {
	out := make(map[string][]int64, len(models))
	for m, vs := range models {
		list := make([]int64, 0, len(vs))
		for v := range vs {
			list = append(list, v)
		}
		slices.Sort(list)
		out[m] = list
	}
	return out
}

// dirStamp is a model directory's stat when its versions were last read.
type dirStamp struct {
	info fs.FileInfo
	seen time.Time // when the scan that read it started
}

// racyWindow: a directory modified less than this before it was read may be
// modified again with the same mtime (coarse filesystem timestamps), so it is
// re-read on the next scan, as git does for racily clean files.
const racyWindow = 2 * time.Second

func (d dirStamp) unchanged(now fs.FileInfo) bool {
	return os.SameFile(d.info, now) && d.info.ModTime().Equal(now.ModTime()) &&
		d.info.ModTime().Before(d.seen.Add(-racyWindow))
}

// allLoaded: every version has its pipeline (versions with errors are re-checked
// each scan, so that a spec written into place later is picked up).
func allLoaded(vs map[int64]*Entry) bool {
	for _, e := range vs {
		if e.Err != nil {
			return false
		}
	}
	return true
}

// Generation counts the scans that changed something; it starts at 1 after the
// first successful scan.
func (s *Snapshot) Generation() uint64 { return s.generation }

// Get returns the version's pipeline, false when the version is unknown or has no
// valid spec.
func (s *Snapshot) Get(model string, version int64) (*Pipeline, bool) {
	e := s.models[model][version]
	if e == nil || e.Pipeline == nil {
		return nil, false
	}
	return e.Pipeline, true
}

// Lookup returns the version's entry, with its load error if any.
func (s *Snapshot) Lookup(model string, version int64) (Entry, bool) {
	e := s.models[model][version]
	if e == nil {
		return Entry{}, false
	}
	return *e, true
}

// Err says why a version has no pipeline: nil when it has one, the load error
// when its spec is missing or invalid, ErrVersionNotFound when there is no such
// version directory.
func (s *Snapshot) Err(model string, version int64) error {
	e := s.models[model][version]
	if e == nil {
		return fmt.Errorf("%w: %s/%d", ErrVersionNotFound, model, version)
	}
	return e.Err
}

// vocabularies returns the compiled vocabularies the snapshot's pipelines use.
func (s *Snapshot) vocabularies() map[*wordVocab]bool {
	used := map[*wordVocab]bool{}
	for _, vs := range s.models {
		for _, e := range vs {
			if e.Pipeline != nil && e.Pipeline.text != nil {
				used[e.Pipeline.text.v] = true
			}
		}
	}
	return used
}

// Models lists the model names, sorted.
func (s *Snapshot) Models() []string {
	out := make([]string, 0, len(s.models))
	for m := range s.models {
		out = append(out, m)
	}
	slices.Sort(out)
	return out
}

// Versions lists a model's version numbers, ascending, with or without a spec.
// The slice is shared: do not modify it.
func (s *Snapshot) Versions(model string) []int64 { return s.versions[model] }

// Store keeps the pipelines of every <root>/<model>/<version>/ (the tree TF
// Serving and the modelsync sidecar share), polling for new, replaced and removed
// versions. Version directories whose names are not non-negative integers (the
// sidecar's temporary names) are ignored, as TF Serving ignores them.
type Store struct {
	root    string
	opts    StoreOptions
	snap    atomic.Pointer[Snapshot]
	changes chan struct{}
	ready   chan struct{}
	once    sync.Once
	scanMu  sync.Mutex // one scan at a time
	vocabs  vocabCache // shared by the pipelines of the current snapshot
	metrics *storeMetrics
	now     func() time.Time
}

// NewStore returns a Store over root. Nothing is read until Run or Scan.
func NewStore(root string, opts StoreOptions) *Store {
	s := &Store{
		root:    root,
		opts:    opts.withDefaults(),
		changes: make(chan struct{}, 1),
		ready:   make(chan struct{}),
		now:     time.Now,
	}
	s.snap.Store(&Snapshot{models: map[string]map[int64]*Entry{}})
	s.metrics = newStoreMetrics(s.opts.MeterProvider, s.opts.Logger, s)
	return s
}

// scanDuty bounds the share of one core that polling the root may take: the next
// scan starts PollInterval after the last one started, or scanDuty times the last
// scan's duration after it ended, whichever is later. A scan stats every model
// directory, so with 50,000 models (about half a second a scan) this stretches the
// interval to a few seconds instead of scanning without pause; with hundreds it is
// PollInterval.
const scanDuty = 8

func nextScanWait(interval, last time.Duration) time.Duration {
	return max(interval-last, scanDuty*last)
}

// Run scans the root now and then every PollInterval (stretched when scans are
// slow, see scanDuty) until ctx is done, and returns nil then. Scan failures (an
// unreadable root) are logged and retried; the last good snapshot keeps serving.
func (s *Store) Run(ctx context.Context) error {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		start := time.Now()
		if err := s.Scan(ctx); err != nil && ctx.Err() == nil {
			s.opts.Logger.Warn("preprocess: scan failed; keeping the last snapshot", "root", s.root, "err", err)
		}
		t.Reset(nextScanWait(s.opts.PollInterval, time.Since(start)))
	}
}

// Ready is closed after the first scan that could read the root.
func (s *Store) Ready() <-chan struct{} { return s.ready }

// Changes receives a value after a scan that changed the snapshot. It holds at
// most one pending value (changes coalesce) and is meant for one consumer, which
// should re-read Snapshot() on each receive.
func (s *Store) Changes() <-chan struct{} { return s.changes }

// Snapshot returns the current immutable snapshot.
func (s *Store) Snapshot() *Snapshot { return s.snap.Load() }

// Get returns a version's pipeline from the current snapshot.
func (s *Store) Get(model string, version int64) (*Pipeline, bool) {
	return s.snap.Load().Get(model, version)
}

// Err says why a version has no pipeline in the current snapshot (see Snapshot.Err).
func (s *Store) Err(model string, version int64) error {
	return s.snap.Load().Err(model, version)
}

// Scan reads the tree once, loads the specs of new or replaced versions, drops
// removed ones and publishes a new snapshot if anything changed. An unreadable
// root is an error and changes nothing; an unreadable model directory keeps that
// model's previous versions.
func (s *Store) Scan(ctx context.Context) error {
	s.scanMu.Lock()
	defer s.scanMu.Unlock()
	prev := s.snap.Load()
	models, err := os.ReadDir(s.root)
	if err != nil {
		s.metrics.scanErrors.Add(ctx, 1)
		return fmt.Errorf("preprocess: read model root: %w", err)
	}
	scanStart := s.now()
	next := make(map[string]map[int64]*Entry, len(models))
	dirs := make(map[string]dirStamp, len(models))
	var toLoad []*Entry
	changed := false
	for _, m := range models {
		name := m.Name()
		if strings.HasPrefix(name, ".") || !isDir(s.root, m) {
			continue
		}
		mdir := filepath.Join(s.root, name)
		di, err := os.Stat(mdir)
		if err != nil {
			continue // vanished
		}
		if pd, ok := prev.dirs[name]; ok && pd.unchanged(di) && allLoaded(prev.models[name]) {
			// Versions appear, vanish and are replaced only by renames in the model
			// directory, which change its mtime: nothing to re-read.
			next[name], dirs[name] = prev.models[name], pd
			continue
		}
		dirs[name] = dirStamp{info: di, seen: scanStart}
		versions, err := os.ReadDir(mdir)
		if err != nil {
			delete(dirs, name)
			if old, ok := prev.models[name]; ok {
				next[name] = old
			}
			s.opts.Logger.Warn("preprocess: cannot read model directory; keeping its versions", "dir", mdir, "err", err)
			continue
		}
		vm := map[int64]*Entry{}
		for _, v := range versions {
			num, err := strconv.ParseInt(v.Name(), 10, 64)
			if err != nil || num < 0 || !isDir(mdir, v) {
				continue
			}
			dir := filepath.Join(mdir, v.Name())
			st, err := stampOf(dir)
			if err != nil {
				continue // vanished between ReadDir and Stat
			}
			if old := prev.models[name][num]; old != nil && old.stamp.same(st) {
				vm[num] = old
				continue
			}
			e := &Entry{Model: name, Version: num, Dir: dir, stamp: st}
			vm[num] = e
			toLoad = append(toLoad, e)
		}
		if len(vm) > 0 {
			next[name] = vm
		}
	}
	for m, vs := range prev.models {
		for v := range vs {
			if next[m][v] == nil {
				changed = true
				s.opts.Logger.Info("preprocess: version removed", "model", m, "version", v)
			}
		}
	}
	if len(toLoad) > 0 {
		changed = true
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(s.opts.Concurrency)
		for _, e := range toLoad {
			g.Go(func() error {
				if err := gctx.Err(); err != nil {
					return err
				}
				e.Pipeline, e.Err = load(e.Dir, &s.vocabs)
				e.LoadedAt = s.now()
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return err // cancelled: publish nothing half-loaded
		}
		for _, e := range toLoad {
			if e.Err != nil {
				s.metrics.loads.Add(ctx, 1, s.metrics.failed)
				s.opts.Logger.Warn("preprocess: version has no usable spec; not routable for typed requests",
					"model", e.Model, "version", e.Version, "err", e.Err)
			} else {
				s.metrics.loads.Add(ctx, 1, s.metrics.ok)
				s.opts.Logger.Info("preprocess: loaded spec", "model", e.Model, "version", e.Version,
					"fingerprint", e.Pipeline.Fingerprint())
			}
		}
	}
	first := prev.generation == 0
	if !changed && !first {
		// Same versions; keep the new directory stamps without a new generation.
		s.snap.Store(&Snapshot{generation: prev.generation, models: prev.models, versions: prev.versions, dirs: dirs})
	}
	if changed || first {
		snap := &Snapshot{generation: prev.generation + 1, models: next, versions: sortedVersions(next), dirs: dirs}
		s.snap.Store(snap)
		s.vocabs.retain(snap.vocabularies())
		select {
		case s.changes <- struct{}{}:
		default:
		}
	}
	s.once.Do(func() { close(s.ready) })
	return nil
}

func isDir(parent string, e fs.DirEntry) bool {
	if e.IsDir() {
		return true
	}
	if e.Type()&fs.ModeSymlink != 0 {
		fi, err := os.Stat(filepath.Join(parent, e.Name()))
		return err == nil && fi.IsDir()
	}
	return false
}

func stampOf(dir string) (stamp, error) {
	di, err := os.Stat(dir)
	if err != nil {
		return stamp{}, err
	}
	st := stamp{dir: di}
	if si, err := os.Stat(filepath.Join(dir, SpecPath)); err == nil {
		st.spec = si
	}
	return st, nil
}
