package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tfgate/tfgate/gateway/route"
	"github.com/tfgate/tfgate/preprocess"
)

// builder is the gateway's control plane. It loads and validates the routing
// config (all or nothing), follows the spec store and the backends' readiness,
// runs each version's signature check, asks readiness to look for the versions
// it would route (Backends.Want), and from all of that builds an immutable
// [snapshot] that it publishes through an atomic pointer. The request path
// ([Server]) only reads the latest snapshot; it never blocks on a build.
//
// A build is a function of its inputs (config, specs, readiness, signature
// results), so what decides placement later plugs in here: another input to
// the build, and another consumer of what it considers live (retain).
//
// Concurrency: reload and poll are serialised by reloadMu; builds by buildMu.
// run owns every goroutine the builder starts (the file watcher and rebuild
// loop, signature checks) and returns after they stop.
type builder struct {
	configPath    string
	placement     bool // Options.placement
	backends      Backends
	specs         Specs
	backendsReady <-chan struct{} // nil counts as closed
	rand          func() uint64
	watchInterval time.Duration
	log           *slog.Logger
	stats         *counters
	// retain, when set, is told after each build which versions are still
	// served (batching.Group.Retain closes the batchers of the others).
	retain func(keep func(model string, v int64) bool) int

	snap atomic.Pointer[snapshot]
	cfg  atomic.Pointer[route.Config]
	gen  atomic.Uint64

	reloadMu  sync.Mutex // one reload at a time
	buildMu   sync.Mutex // one rebuild at a time
	lastErr   atomic.Pointer[string]
	fileStamp fileStamp // guarded by reloadMu

	// loadedAt and failedAt: when the last successful and the last failed
	// reload happened (unix nanos, 0 never), for the status page.
	loadedAt, failedAt atomic.Int64
	arms               armCounters // the snapshots' arm assignment counters

	rebuildCh chan struct{}
	sig       *sigChecker
	split     splitWatch
	settled   atomic.Bool // latched by settledNow
	pub       signal      // notified after each published snapshot (coldstart.go waits on it)
}

// newBuilder returns a builder over opts (defaults applied); it publishes
// nothing until the first reload.
func newBuilder(opts Options, stats *counters, retain func(keep func(model string, v int64) bool) int) *builder {
	b := &builder{
		configPath:    opts.ConfigPath,
		placement:     opts.placement,
		backends:      opts.Backends,
		specs:         opts.Specs,
		backendsReady: opts.BackendsReady,
		rand:          opts.Rand,
		watchInterval: opts.WatchInterval,
		log:           opts.Logger,
		stats:         stats,
		retain:        retain,
		rebuildCh:     make(chan struct{}, 1),
	}
	b.sig = newSigChecker(opts.Backends, opts.Specs, opts.Logger, stats, b.triggerRebuild, opts.SignatureConcurrency)
	return b
}

// current is the snapshot now serving.
func (b *builder) current() *snapshot { return b.snap.Load() }

type vkey struct {
	model   string
	version int64
}

// snapshot is what one request reads: routing plus the signature-checked specs.
type snapshot struct {
	routes *route.Snapshot
	// pipes holds the versions whose spec passed its signature check, each with
	// the content hash that was checked: the request path takes that hash's
	// pipeline from the spec store's cache (compiling it on a miss), so the
	// pipeline applied is the pinned version's (invariant 1) and the snapshot
	// holds no compiled pipelines, however many versions it routes.
	pipes map[vkey]*checkedSpec
	// backendsReady: the backends had finished their first full readiness round
	// when this snapshot was built; sigPending: versions on a host whose signature
	// check had not finished. Together they say whether start-up has settled.
	backendsReady bool
	sigPending    int
	// arms counts experiment arm assignments (armcount.go); shared across
	// the snapshots of configs that keep an arm.
	arms map[armKey]*atomic.Uint64
}

// checkedSpec is a spec that passed its version's signature check. A build
// makes one per distinct content hash and shares it between the versions that
// have it.
type checkedSpec struct{ hash preprocess.SpecHash }

// reload re-reads the config file now. On failure the last good config keeps
// serving; the failure is logged, counted and returned.
func (b *builder) reload() error {
	b.reloadMu.Lock()
	defer b.reloadMu.Unlock()
	st, data, err := readStamped(b.configPath)
	if err == nil {
		b.fileStamp = st
		return b.apply(data)
	}
	return b.fail(fmt.Errorf("read routing config: %w", err))
}

// apply parses, validates and publishes data. Called with reloadMu held.
func (b *builder) apply(data []byte) error {
	cfg, err := route.ParseWith(b.configPath, data, route.Checks{Specs: b.specCheck, Classes: b.classes})
	if err != nil {
		return b.fail(err)
	}
	if old := b.cfg.Load(); old != nil && !reflect.DeepEqual(old.Hosts, cfg.Hosts) {
		b.log.Warn("gateway: the backends section changed; restart the gateway to apply it (routing changes are applied now)", "file", b.configPath)
	}
	b.backends.SetModels(cfg.ModelNames())
	b.buildMu.Lock()
	b.cfg.Store(cfg)
	b.gen.Add(1)
	b.rebuildLocked()
	b.buildMu.Unlock()
	b.stats.reloads.Add(1)
	b.lastErr.Store(nil)
	b.loadedAt.Store(time.Now().UnixNano())
	b.log.Info("gateway: routing config loaded", "file", b.configPath, "generation", b.gen.Load(), "models", len(cfg.Models))
	return nil
}

func (b *builder) fail(err error) error {
	b.stats.reloadFailures.Add(1)
	msg := err.Error()
	b.lastErr.Store(&msg)
	b.failedAt.Store(time.Now().UnixNano())
	b.log.Error("gateway: routing config rejected; the last good config keeps serving", "file", b.configPath, "err", err)
	return err
}

// lastReloadError is the last failed reload's error text, "" after a success.
func (b *builder) lastReloadError() string {
	if e := b.lastErr.Load(); e != nil {
		return *e
	}
	return ""
}

// specCheck is route.SpecChecker over the store: labels, defaults and arms must
// name versions whose spec loaded.
func (b *builder) specCheck(model string, v int64) error {
	if _, ok := b.specs.SpecHash(model, v); ok {
		return nil
	}
	if err := b.specs.Err(model, v); err != nil {
		return err
	}
	return preprocess.ErrNoSpec
}

// classes is route.ClassLister over the store: the class names of a version's
// scores output, which the members of a mean, weighted_mean or vote ensemble
// must share.
func (b *builder) classes(model string, v int64) ([]string, error) {
	h, ok := b.specs.SpecHash(model, v)
	if !ok {
		if err := b.specs.Err(model, v); err != nil {
			return nil, err
		}
		return nil, preprocess.ErrNoSpec
	}
	p, err := b.specs.Pipeline(model, v, h)
	if err != nil {
		return nil, err
	}
	return scoreClasses(p)
}

// scoreClasses is the class names of p's scores output.
func scoreClasses(p *preprocess.Pipeline) ([]string, error) {
	for _, o := range p.Outputs() {
		if o.Kind != preprocess.OutputScores {
			continue
		}
		if len(o.Labels) == 0 {
			return nil, fmt.Errorf("its spec's scores output %q names no classes (give it label_names or a labels file)", o.Name)
		}
		return o.Labels, nil
	}
	return nil, errors.New("its spec has no scores output")
}

// rebuild builds a snapshot from the current config, specs, readiness and
// signature checks, and publishes it.
func (b *builder) rebuild() {
	b.buildMu.Lock()
	defer b.buildMu.Unlock()
	b.rebuildLocked()
}

func (b *builder) rebuildLocked() {
	cfg := b.cfg.Load()
	if cfg == nil {
		return
	}
	// Read before the build, so that what the build reads of readiness is at least
	// as new as the round that made the backends ready.
	backendsReady := closed(b.backendsReady)
	st := &buildState{b: b, cfg: cfg, pipes: map[vkey]*checkedSpec{}, why: map[vkey]error{}, checked: map[preprocess.SpecHash]*checkedSpec{}}
	for name, m := range cfg.Models {
		for _, v := range b.specs.Versions(name) {
			st.consider(name, v, m.Pools)
		}
		b.wantMissing(st, m)
	}
	routes := route.Build(cfg, st, b.gen.Load(), route.BuildOptions{Rand: b.rand})
	b.split.observe(b.log, routes, &b.stats.splitWarnings)
	pending := 0
	for _, err := range st.why {
		if errors.Is(err, errPending) {
			pending++
		}
	}
	b.snap.Store(&snapshot{routes: routes, pipes: st.pipes, backendsReady: backendsReady, sigPending: pending, arms: b.arms.forConfig(cfg)})
	b.pub.notify()
	// Signature results are kept for the versions this build considered (every
	// version in the spec store of a configured model, and every version the
	// config names); the others are gone.
	b.sig.retain(func(k vkey) bool {
		_, considered := st.why[k]
		return considered || st.pipes[k] != nil
	})
	// Batchers of versions that are gone (no longer in the config, in the spec store
	// or on any host) are closed, after sending what they hold.
	if b.retain == nil {
		return
	}
	if n := b.retain(func(model string, v int64) bool {
		m := cfg.Models[model]
		return m != nil && (slices.Contains(b.specs.Versions(model), v) ||
			len(b.backends.AvailableHosts(model, v, m.Pools)) > 0)
	}); n > 0 {
		b.log.Info("gateway: closed the batchers of versions no longer served", "batchers", n)
	}
}

// settledNow is [Server.Settled].
func (b *builder) settledNow() (ok bool, why string) {
	if b.settled.Load() {
		return true, ""
	}
	snap := b.snap.Load()
	switch {
	case !snap.backendsReady:
		return false, "waiting for the first readiness round over every host and model"
	case snap.sigPending > 0:
		return false, fmt.Sprintf("%d signature checks pending", snap.sigPending)
	}
	b.settled.Store(true)
	return true, ""
}

// closed reports whether ch is closed; a nil ch counts as closed.
func closed(ch <-chan struct{}) bool {
	if ch == nil {
		return true
	}
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// wantMissing asks readiness to look now (Backends.Want) for the versions of m
// that no host has yet but should soon: the newest versions whose spec loaded
// before any host had them, and every version the config names. Older versions
// without a host are on their way out (TF Serving's version policy unloaded them)
// and are left to the budgeted resync. With placement on, only the versions the
// config names: an unplaced model's newest version is on no host by design, and
// wanting all of them (50,000 at fleet scale) made every priority poll round ask
// every host for every unplaced model.
func (b *builder) wantMissing(st *buildState, m *route.Model) {
	onHost := func(v int64) bool { return len(b.backends.AvailableHosts(m.Name, v, m.Pools)) > 0 }
	versions := b.specs.Versions(m.Name)
	if b.placement {
		versions = nil
	}
	for i := len(versions) - 1; i >= 0 && !onHost(versions[i]); i-- {
		if st.why[vkey{m.Name, versions[i]}] == nil { // spec loaded
			b.backends.Want(m.Name, versions[i])
		}
	}
	for _, v := range append(m.NamedVersions(), st.cfg.MemberVersions(m.Name)...) {
		if !onHost(v) {
			b.backends.Want(m.Name, v)
		}
	}
}

// triggerRebuild asks the run loop for a rebuild (coalesced).
func (b *builder) triggerRebuild() {
	select {
	case b.rebuildCh <- struct{}{}:
	default:
	}
}

// buildState is route.State for one rebuild.
type buildState struct {
	b       *builder
	cfg     *route.Config
	pipes   map[vkey]*checkedSpec
	why     map[vkey]error
	checked map[preprocess.SpecHash]*checkedSpec // one per content hash
}

func (st *buildState) pools(model string) []string {
	if m := st.cfg.Models[model]; m != nil {
		return m.Pools
	}
	return nil
}

// consider records whether a version's pipeline is usable: loaded, on a host, and
// signature-checked (starting the check when it has not been done).
func (st *buildState) consider(model string, v int64, pools []string) {
	k := vkey{model, v}
	if _, done := st.why[k]; done {
		return
	}
	if _, done := st.pipes[k]; done {
		return
	}
	h, ok := st.b.specs.SpecHash(model, v)
	if !ok {
		err := st.b.specs.Err(model, v)
		if err == nil {
			err = preprocess.ErrNoSpec
		}
		st.why[k] = err
		return
	}
	if len(st.b.backends.AvailableHosts(model, v, pools)) == 0 {
		// The spec loaded; it is checked once a host has the version. The missing
		// host is what route reports.
		st.why[k] = nil
		return
	}
	if err := st.b.sig.status(k, h, pools); err != nil {
		st.why[k] = err
		return
	}
	c := st.checked[h]
	if c == nil {
		c = &checkedSpec{hash: h}
		st.checked[h] = c
	}
	st.pipes[k] = c
}

func (st *buildState) SpecStatus(model string, v int64) error {
	st.consider(model, v, st.pools(model))
	return st.why[vkey{model, v}]
}

func (st *buildState) Versions(model string) []int64 { return st.b.specs.Versions(model) }

func (st *buildState) AvailableHosts(model string, v int64) []string {
	return st.b.backends.AvailableHosts(model, v, st.pools(model))
}

// The Server's control-plane methods: each is the builder's.

// Generation is the number of the config now serving (1 for the first).
func (s *Server) Generation() uint64 { return s.builder.current().routes.Generation }

// Reload re-reads the config file now (what SIGHUP does). On failure the last
// good config keeps serving; the failure is logged, counted and returned.
func (s *Server) Reload() error { return s.builder.reload() }

// Settled reports whether start-up has settled: the backends have answered a
// full readiness round (every host about every model) and every version they
// reported has finished its signature check, so what is not routable now is not
// merely still loading. Until then why says what it waits for. Once settled it
// stays settled: versions published later are not start-up.
func (s *Server) Settled() (ok bool, why string) { return s.builder.settledNow() }

// AnyRoutable reports whether some model version is routable now, and how many
// models the routing config has: the cheap question a readiness probe asks
// (ListRoutes describes every model).
func (s *Server) AnyRoutable() (bool, int) { return s.builder.current().routes.AnyRoutable() }

// Run watches the config file and rebuilds the routing snapshot whenever the
// config, the backends' readiness or the preprocessing specs change, and runs
// signature checks, until ctx is done. It returns after every goroutine it
// started has stopped.
func (s *Server) Run(ctx context.Context) error { return s.builder.run(ctx) }
