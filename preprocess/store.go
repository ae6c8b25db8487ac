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
	// CacheBytes bounds the compiled pipelines the Store keeps (estimated bytes,
	// vocabularies included and counted once however many pipelines share them):
	// beyond it the least recently used are dropped and compiled again from disk
	// when next asked for. Pipelines are cached by content hash, so versions with
	// identical specs and assets share one. Default DefaultCacheBytes (64 MiB).
	CacheBytes int64
}

func (o StoreOptions) withDefaults() StoreOptions {
	if o.PollInterval <= 0 {
		o.PollInterval = 2 * time.Second
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 4
	}
	if o.CacheBytes <= 0 {
		o.CacheBytes = DefaultCacheBytes
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Entry is one model version the Store has seen: where its spec is and its
// content hash, or why it has no usable spec. It holds no compiled pipeline: the
// Store's cache does, by hash (Store.Pipeline).
type Entry struct {
	Model   string
	Version int64
	// Dir is the version directory.
	Dir string
	// Hash is the spec's content hash; zero when Err is set.
	Hash SpecHash
	// Err wraps ErrNoSpec or ErrSpec when the version has no usable spec.
	Err error
	// LoadedAt is when the spec was (last) read.
	LoadedAt time.Time

	stamp stamp
}

// stamp identifies what was loaded, to reload only when a version directory or
// its spec file is replaced.
type stamp struct {
	dir, spec fileID // spec is not ok when there was no spec file
}

// fileID is what a stamp keeps of a stat: the file's identity (device and
// inode, as os.SameFile compares them), size and modification time. 40 bytes,
// where an fs.FileInfo holds ~200 (at 50,000 versions, two per version and one
// per model directory were a quarter of the store's heap).
type fileID struct {
	dev, ino    uint64
	size, mtime int64
	ok          bool // false: no file
}

func (a fileID) sameFile(b fileID) bool { return a.ok && b.ok && a.dev == b.dev && a.ino == b.ino }

func (a stamp) same(b stamp) bool {
	if !a.dir.sameFile(b.dir) || a.spec.ok != b.spec.ok {
		return false
	}
	return !a.spec.ok || a.spec.sameFile(b.spec) && a.spec.size == b.spec.size && a.spec.mtime == b.spec.mtime
}

// Snapshot is an immutable view of every model version under the root.
type Snapshot struct {
	generation uint64
	models     map[string]map[int64]*Entry
	versions   map[string][]int64  // model -> sorted versions of models (read on every routing rebuild)
	dirs       map[string]dirStamp // model directories as last read
	hashes     map[SpecHash]int32  // versions with a valid spec, by content hash
	cache      *pipelineCache      // the Store's
	vocabs     *vocabCache
}

// specHashes counts the valid versions of models by content hash.
func specHashes(models map[string]map[int64]*Entry) map[SpecHash]int32 {
	out := map[SpecHash]int32{}
	for _, vs := range models {
		for _, e := range vs {
			if e.Err == nil {
				out[e.Hash]++
			}
		}
	}
	return out
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
	id   fileID
	seen time.Time // when the scan that read it started
}

// racyWindow: a directory modified less than this before it was read may be
// modified again with the same mtime (coarse filesystem timestamps), so it is
// re-read on the next scan, as git does for racily clean files.
const racyWindow = 2 * time.Second

func (d dirStamp) unchanged(now fs.FileInfo) bool {
	n := fileIDOf(now)
	return d.id.sameFile(n) && d.id.mtime == n.mtime && time.Unix(0, d.id.mtime).Before(d.seen.Add(-racyWindow))
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
// valid spec (or its spec can no longer be compiled: see Store.Pipeline). It
// compiles on a cache miss.
func (s *Snapshot) Get(model string, version int64) (*Pipeline, bool) {
	e := s.models[model][version]
	if e == nil || e.Err != nil {
		return nil, false
	}
	p, err := s.pipeline(e)
	return p, err == nil
}

// SpecHash returns the content hash of the version's spec, false when the
// version is unknown or has no valid spec. It does no I/O.
func (s *Snapshot) SpecHash(model string, version int64) (SpecHash, bool) {
	e := s.models[model][version]
	if e == nil || e.Err != nil {
		return SpecHash{}, false
	}
	return e.Hash, true
}

// pipeline is e's pipeline from the cache, compiled from e.Dir on a miss.
func (s *Snapshot) pipeline(e *Entry) (*Pipeline, error) {
	if s.cache == nil {
		return nil, fmt.Errorf("%w: %s/%d", ErrVersionNotFound, e.Model, e.Version)
	}
	p, _, err := s.cache.get(e.Hash, func() (*Pipeline, error) { return load(e.Dir, s.vocabs) })
	return p, err
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

// Store follows the specs of every <root>/<model>/<version>/ (the tree TF
// Serving and the modelsync sidecar share), polling for new, replaced and removed
// versions. Version directories whose names are not non-negative integers (the
// sidecar's temporary names) are ignored, as TF Serving ignores them.
//
// Per version it keeps only the directory, its stamp and the spec's content
// hash; compiled pipelines live in a byte-bounded LRU keyed by that hash
// (StoreOptions.CacheBytes), so memory follows the distinct specs in use, not
// the catalog. The disk is the source of truth: a pipeline dropped from the
// cache is read and compiled again when next asked for.
type Store struct {
	root    string
	opts    StoreOptions
	snap    atomic.Pointer[Snapshot]
	changes chan struct{}
	ready   chan struct{}
	once    sync.Once
	scanMu  sync.Mutex // one scan at a time
	vocabs  vocabCache // shared by the cached pipelines
	cache   *pipelineCache
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
	s.cache = newPipelineCache(s.opts.CacheBytes, &s.vocabs)
	s.snap.Store(&Snapshot{models: map[string]map[int64]*Entry{}, cache: s.cache, vocabs: &s.vocabs})
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

// Get returns a version's pipeline from the current snapshot, compiling it on a
// cache miss.
func (s *Store) Get(model string, version int64) (*Pipeline, bool) {
	return s.snap.Load().Get(model, version)
}

// SpecHash returns the content hash of a version's spec in the current
// snapshot, false without a valid spec. It does no I/O.
func (s *Store) SpecHash(model string, version int64) (SpecHash, bool) {
	return s.snap.Load().SpecHash(model, version)
}

// Pipeline returns the compiled pipeline whose content hash is want, for the
// version (model, version): from the cache, or on a miss read and compiled from
// the version's directory in the current snapshot, which must still have that
// hash (ErrSpecChanged otherwise; ErrVersionNotFound or the load error when the
// version is gone or broken). Concurrent misses for one hash compile once.
func (s *Store) Pipeline(model string, version int64, want SpecHash) (*Pipeline, error) {
	p, _, err := s.cache.get(want, func() (*Pipeline, error) {
		e := s.snap.Load().models[model][version]
		switch {
		case e == nil:
			return nil, fmt.Errorf("%w: %s/%d", ErrVersionNotFound, model, version)
		case e.Err != nil:
			return nil, e.Err
		case e.Hash != want:
			return nil, fmt.Errorf("%w: %s/%d", ErrSpecChanged, model, version)
		}
		return load(e.Dir, &s.vocabs)
	})
	return p, err
}

// CacheStats reports the compiled-pipeline cache's counters and sizes.
func (s *Store) CacheStats() CacheStats { return s.cache.stats() }

// SetCacheBytes changes the cache's byte budget (StoreOptions.CacheBytes),
// dropping least recently used pipelines down to it now.
func (s *Store) SetCacheBytes(n int64) { s.cache.setBudget(n) }

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
		dirs[name] = dirStamp{id: fileIDOf(di), seen: scanStart}
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
		var compiled sync.Map // SpecHash -> true: compiled (so valid) in this scan
		for _, e := range toLoad {
			g.Go(func() error {
				if err := gctx.Err(); err != nil {
					return err
				}
				e.Hash, e.Err = s.read(e.Dir, prev.hashes, &compiled)
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
					"spec_hash", e.Hash.String())
			}
		}
	}
	first := prev.generation == 0
	if !changed && !first {
		// Same versions; keep the new directory stamps without a new generation.
		s.snap.Store(&Snapshot{generation: prev.generation, models: prev.models, versions: prev.versions, dirs: dirs,
			hashes: prev.hashes, cache: s.cache, vocabs: &s.vocabs})
	}
	if changed || first {
		snap := &Snapshot{generation: prev.generation + 1, models: next, versions: sortedVersions(next), dirs: dirs,
			hashes: specHashes(next), cache: s.cache, vocabs: &s.vocabs}
		s.snap.Store(snap)
		// Pipelines of specs no version has any more are dropped now.
		s.cache.retain(func(h SpecHash) bool { return snap.hashes[h] > 0 })
		select {
		case s.changes <- struct{}{}:
		default:
		}
	}
	s.once.Do(func() { close(s.ready) })
	return nil
}

// read checks a new or replaced version's spec and returns its content hash.
// A spec whose content hash is already known to compile (a version of the last
// snapshot has it, it is cached, or this scan compiled it) is not compiled
// again: identical specs compile once. Otherwise it is compiled, which validates
// it, and the pipeline is cached.
func (s *Store) read(dir string, known map[SpecHash]int32, compiled *sync.Map) (SpecHash, error) {
	if h, ok := contentKey(dir); ok {
		if _, done := compiled.Load(h); done || known[h] > 0 || s.cache.peek(h) {
			return h, nil
		}
		// Through the cache, so that concurrent reads of one spec compile it once.
		_, hit, err := s.cache.get(h, func() (*Pipeline, error) { return load(dir, &s.vocabs) })
		switch {
		case err == nil:
			compiled.Store(h, true)
			return h, nil
		case !hit && !errors.Is(err, ErrSpecChanged):
			return SpecHash{}, err // this version's own compile error
		}
		// Another version's compile failed, or the key disagreed: compile here.
	}
	p, err := load(dir, &s.vocabs)
	if err != nil {
		return SpecHash{}, err
	}
	s.cache.misses.Add(1)
	s.cache.add(p)
	compiled.Store(p.hash, true)
	return p.hash, nil
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
	st := stamp{dir: fileIDOf(di)}
	if si, err := os.Stat(filepath.Join(dir, SpecPath)); err == nil {
		st.spec = fileIDOf(si)
	}
	return st, nil
}
