package modelsync

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/hashicorp/consul/api"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tfgate/tfgate/modelsync/journal"
	"github.com/tfgate/tfgate/modelsync/reload"
	"github.com/tfgate/tfgate/placement"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

// Placement mode: the sidecar keeps the base path and TF Serving's model config
// equal to its host's assignment in Consul KV (see doc.go).

// PlacementConfig configures placement mode.
type PlacementConfig struct {
	// Enabled turns placement mode on (-placement). Default false.
	Enabled bool `json:"enabled"`
	// Pool is the host's pool: its assignment is <kv_prefix>/placement/<pool>/<host>/.
	// Default "default".
	Pool string `json:"pool"`
	// Host is the host's ID in the assignment (its Consul service ID). Required.
	Host string `json:"host"`
	// KVPrefix is the placement root in Consul KV. Default "tfgate".
	KVPrefix string `json:"kv_prefix"`
	// CacheBytes bounds the disk bytes of versions kept after they were unassigned
	// (and unloaded), so a version placed back loads without an S3 download; past it
	// the least recently unassigned go first. 0 keeps none. Default 10 GiB.
	CacheBytes int64 `json:"cache_bytes"`
	// PollInterval: while versions are loading, unloading or being fetched, TF
	// Serving is asked for their state this often, and status is written to KV at
	// most this often. Default 1s.
	PollInterval Duration `json:"poll_interval"`
	// StatusInterval: the full resync (disk, TF Serving's state of every model) and
	// the status heartbeat in KV, when nothing is in flight. Default 10s.
	StatusInterval Duration `json:"status_interval"`
	// FailureBackoff is how long a version that failed to load (or whose archive was
	// rejected) is reported as a failure, so the controller does not place it on this
	// host again before then. Default 10m.
	FailureBackoff Duration `json:"failure_backoff"`
	// UnloadDelay is how long a version taken off this host stays in TF Serving's
	// model config (loaded, serving) before the config is rewritten without it:
	// gateways see the same assignment change within milliseconds and stop routing
	// the version here, so no request reaches the host after the unload. The drain
	// ends early when a version added to the config is not yet AVAILABLE: the
	// controller counts the removed copy's memory as free, and its replacement's
	// load must not find it still taken. 0 unloads at once. Default 2s.
	UnloadDelay Duration `json:"unload_delay"`
}

// DefaultPlacementConfig returns placement mode's defaults (off).
func DefaultPlacementConfig() PlacementConfig {
	return PlacementConfig{
		Pool:           placement.DefaultPoolName,
		KVPrefix:       "tfgate",
		CacheBytes:     10 << 30,
		PollInterval:   Duration(time.Second),
		StatusInterval: Duration(10 * time.Second),
		FailureBackoff: Duration(10 * time.Minute),
		UnloadDelay:    Duration(2 * time.Second),
	}
}

func (p PlacementConfig) validate(c Config) []error {
	if !p.Enabled {
		return nil
	}
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf("placement: "+format, a...)) }
	if c.Mode != ModeServing {
		add("needs mode %q (a gateway holds no models)", ModeServing)
	}
	if p.Host == "" {
		add("host is required (the host's ID in the assignment, its Consul service ID)")
	}
	if p.Pool == "" || strings.Contains(p.Pool, "/") || strings.Contains(p.Host, "/") {
		add("pool %q and host %q must be non-empty KV path segments", p.Pool, p.Host)
	}
	if c.TFServingAddr == "" || c.ModelConfigFile == "" {
		add("tfserving_addr and model_config_file are required (the model config follows the assignment, and a version is deleted only once TF Serving reports it unloaded)")
	}
	if c.Bucket == "" {
		add("bucket is required (assigned versions are fetched from it)")
	}
	if c.Retain != 0 {
		add("retain %d: placement removes what is not assigned; retention must be 0", c.Retain)
	}
	if p.CacheBytes < 0 {
		add("cache_bytes %d is negative", p.CacheBytes)
	}
	if p.PollInterval <= 0 || p.StatusInterval < p.PollInterval {
		add("poll_interval %v must be positive and status_interval %v at least as long", time.Duration(p.PollInterval), time.Duration(p.StatusInterval))
	}
	if p.FailureBackoff <= 0 {
		add("failure_backoff %v must be positive", time.Duration(p.FailureBackoff))
	}
	if p.UnloadDelay < 0 {
		add("unload_delay %v is negative (0 unloads an unassigned version at once)", time.Duration(p.UnloadDelay))
	}
	return errs
}

// ModelService is the part of TF Serving's ModelService placement mode uses
// (same signatures as servingpb.ModelServiceClient).
type ModelService interface {
	GetModelStatus(ctx context.Context, in *servingpb.GetModelStatusRequest, opts ...grpc.CallOption) (*servingpb.GetModelStatusResponse, error)
	HandleReloadConfigRequest(ctx context.Context, in *servingpb.ReloadConfigRequest, opts ...grpc.CallOption) (*servingpb.ReloadConfigResponse, error)
}

var _ ModelService = servingpb.ModelServiceClient(nil)

// PlacementDeps are placement mode's collaborators (NewPlacementDeps builds them).
type PlacementDeps struct {
	// Store watches the host's assignment and takes its status.
	Store *placement.Store
	// TFServing is the local TF Serving.
	TFServing ModelService
	// OnStatus, when set, sees every status write and its error (tests).
	OnStatus func(placement.HostStatus, error)
}

// NewPlacementDeps connects to Consul (api.DefaultConfig: CONSUL_HTTP_ADDR,
// CONSUL_HTTP_TOKEN, ...) and to TF Serving at cfg.TFServingAddr.
func NewPlacementDeps(cfg Config, log *slog.Logger) (PlacementDeps, func(), error) {
	cl, err := api.NewClient(api.DefaultConfig())
	if err != nil {
		return PlacementDeps{}, nil, fmt.Errorf("consul client: %w", err)
	}
	conn, err := grpc.NewClient(cfg.TFServingAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return PlacementDeps{}, nil, fmt.Errorf("TF Serving address %q: %w", cfg.TFServingAddr, err)
	}
	st := placement.NewStore(cl, placement.StoreConfig{Prefix: cfg.Placement.KVPrefix, Logger: log})
	return PlacementDeps{Store: st, TFServing: servingpb.NewModelServiceClient(conn)}, func() { conn.Close() }, nil
}

// placer is placement mode's state. The loop goroutine (run) owns everything
// below mu's block; mu guards what the SQS receivers and the model goroutines
// touch (the assignment for filtering, in-flight fetches, finished jobs).
type placer struct {
	s       *syncer
	cfg     PlacementConfig
	deps    PlacementDeps
	rl      *reload.Reloader
	log     *slog.Logger
	kick    chan struct{}
	metrics *placementMetrics
	// catalogKick asks the catalog loop for a new listing: a notification named
	// a version the last catalog written did not have (cataloged).
	catalogKick chan struct{}
	cataloged   map[placement.Key]bool

	mu       sync.Mutex
	view     *placement.HostView // last known assignment; nil before the first
	assigned map[placement.Key]bool
	inflight map[placement.Key]bool
	results  []journal.Entry
	// Finding an assigned version's object (HEAD of the layouts' keys, a LIST of
	// the model's prefixes if none is there) runs beside the loop, at most
	// maxLookups at once: a LIST per version in the loop held every assigned
	// version behind those before it (about 60 ms each against a 50,000-key
	// bucket, so a burst of 20 cold versions waited over a second for its last).
	looking map[placement.Key]bool   // lookups in flight
	found   map[placement.Key]lookup // finished lookups, used by fetchMissing
	lookWG  sync.WaitGroup
	// The model config the loop wants (wantCfg, signalled on wantSig) and the
	// outcome of the last reload (reloaded): the reloader goroutine calls Set.
	wantCfg   []reload.Model
	wantSig   chan struct{}
	reloaded  *reloadResult
	reloading bool
	sending   map[placement.Key]bool // versions of the config being sent

	posted      []reload.Model // the config last handed to the reloader; nil: hand it again
	reloadFails int
	reloadRetry time.Time // after a failed reload, not before

	disk       map[placement.Key]int64                            // published versions and their bytes
	lastUsed   map[placement.Key]time.Time                        // on disk: when last assigned (or found)
	states     map[string]map[int64]*servingpb.ModelVersionStatus // what TF Serving last said, by model
	configured map[placement.Key]time.Time                        // in the model config since (until AVAILABLE)
	loadSec    map[placement.Key]float64
	failures   map[placement.Key]placement.StatusFailure
	retryAt    map[placement.Key]time.Time
	attempts   map[placement.Key]int
	unloadWait map[placement.Key]time.Time // eviction candidates still loaded, since
	// draining: versions taken off the host that stay in the model config until
	// then (UnloadDelay), so gateways stop routing them before the unload.
	draining   map[placement.Key]time.Time
	awaiting   bool // removals waiting for TF Serving to unload
	dirty      bool
	lastFull   time.Time
	lastStatus time.Time
}

func newPlacer(s *syncer, deps PlacementDeps, m metric.Meter) (*placer, error) {
	if deps.Store == nil || deps.TFServing == nil {
		return nil, errors.New("modelsync: placement mode needs Deps.Placement.Store and .TFServing (NewPlacementDeps)")
	}
	rl, err := reload.New(deps.TFServing, s.cfg.ModelConfigFile, s.cfg.BasePath)
	if err != nil {
		return nil, err
	}
	return &placer{
		s: s, cfg: s.cfg.Placement, deps: deps, rl: rl, kick: make(chan struct{}, 1), catalogKick: make(chan struct{}, 1), wantSig: make(chan struct{}, 1),
		log:      s.log.With("pool", s.cfg.Placement.Pool, "host", s.cfg.Placement.Host),
		inflight: map[placement.Key]bool{}, looking: map[placement.Key]bool{}, found: map[placement.Key]lookup{}, disk: map[placement.Key]int64{}, lastUsed: map[placement.Key]time.Time{},
		states: map[string]map[int64]*servingpb.ModelVersionStatus{}, configured: map[placement.Key]time.Time{},
		loadSec: map[placement.Key]float64{}, failures: map[placement.Key]placement.StatusFailure{},
		retryAt: map[placement.Key]time.Time{}, attempts: map[placement.Key]int{}, unloadWait: map[placement.Key]time.Time{},
		draining: map[placement.Key]time.Time{},
		metrics:  newPlacementMetrics(m),
	}, nil
}

func (p *placer) wake() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// skip says whether a notification for (model, v) is to be acknowledged without
// publishing: the version is not assigned to this host, or no assignment is known.
func (p *placer) skip(model string, v int64) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.cataloged[placement.Key{Model: model, Version: v}] {
		// A new version: the controller can place it only once it is in the
		// catalog, so list the bucket now rather than at the next interval.
		select {
		case p.catalogKick <- struct{}{}:
		default:
		}
	}
	if p.view == nil {
		return "placement: no assignment known for this host yet; what gets assigned is fetched then", true
	}
	if !p.assigned[placement.Key{Model: model, Version: v}] {
		return fmt.Sprintf("placement: not assigned to host %s in pool %s", p.cfg.Host, p.cfg.Pool), true
	}
	return "", false
}

// observe sees every journal entry (syncer.record).
func (p *placer) observe(e journal.Entry) {
	if e.Model == "" {
		return
	}
	p.mu.Lock()
	if e.Trigger == triggerPlacement {
		delete(p.inflight, placement.Key{Model: e.Model, Version: e.Version})
	}
	if e.Outcome != journal.Ignored {
		p.results = append(p.results, e)
	}
	p.mu.Unlock()
	p.wake()
}

const triggerPlacement = "placement"

// run watches the assignment and reconciles until ctx ends.
func (p *placer) run(ctx context.Context) {
	updates := make(chan placement.HostView)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := p.deps.Store.WatchHost(ctx, p.cfg.Pool, p.cfg.Host, updates); err != nil {
			p.log.Error("placement watch ended", "err", err)
		}
	}()
	wg.Add(1)
	go func() { defer wg.Done(); p.reloader(ctx) }()
	defer wg.Wait()
	defer p.lookWG.Wait()
	p.log.Info("placement mode: watching the host's assignment", "key", p.deps.Store.HostPrefix(p.cfg.Pool, p.cfg.Host))
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case v := <-updates:
			p.setView(v)
		case <-p.kick:
		case <-timer.C:
		}
		timer.Reset(p.step(ctx))
	}
}

func (p *placer) setView(v placement.HostView) {
	as := make(map[placement.Key]bool, len(v.Assignment.Entries))
	for _, e := range v.Assignment.Entries {
		as[e.Key] = true
	}
	p.mu.Lock()
	old := p.assigned
	p.view, p.assigned = &v, as
	p.mu.Unlock()
	// A version in the config that is taken off the host drains first.
	if d := time.Duration(p.cfg.UnloadDelay); d > 0 {
		inConfig := map[placement.Key]bool{}
		for _, m := range p.posted {
			for _, ver := range m.Versions {
				inConfig[placement.Key{Model: m.Name, Version: ver}] = true
			}
		}
		until := time.Now().Add(d)
		for k := range old {
			if !as[k] && inConfig[k] && p.state(k).GetState() == servingpb.ModelVersionStatus_AVAILABLE {
				if _, ok := p.draining[k]; !ok {
					p.draining[k] = until
				}
			}
		}
	}
	for k := range as {
		delete(p.draining, k)
	}
	p.dirty = true
	p.log.Info("placement: assignment received", "versions", len(as), "generation", v.Manifest.Generation, "index", v.Index)
}

// step is one reconcile: take finished jobs, look at the disk, fetch what is
// missing, set the model config, remove what may go, report. It returns when to
// step again if nothing wakes it earlier.
func (p *placer) step(ctx context.Context) time.Duration {
	now := time.Now()
	full := now.Sub(p.lastFull) >= time.Duration(p.cfg.StatusInterval)
	p.takeResults(now)
	if full || p.dirty {
		if err := p.scanDisk(); err != nil {
			p.log.Warn("placement: cannot list the base path", "err", err)
		}
	}
	p.mu.Lock()
	view, assigned := p.view, p.assigned
	p.mu.Unlock()
	fetching := false
	reloading := p.takeReload(ctx)
	if view != nil {
		fetching = p.fetchMissing(ctx, view, now)
		p.applyConfig(view, assigned)
	}
	moving := p.pollStates(ctx, full, assigned)
	if view != nil {
		p.evict(ctx, assigned, now)
	}
	p.report(ctx, full)
	if full {
		p.lastFull = now
	}
	next := time.Duration(p.cfg.StatusInterval)
	if fetching || moving || reloading || p.awaiting || p.posted == nil && view != nil {
		next = time.Duration(p.cfg.PollInterval)
	}
	for _, until := range p.draining {
		next = min(next, max(until.Sub(time.Now()), time.Millisecond))
	}
	return next
}

// takeResults applies finished jobs: failures with their retry time.
func (p *placer) takeResults(now time.Time) {
	p.mu.Lock()
	rs := p.results
	p.results = nil
	p.mu.Unlock()
	for _, e := range rs {
		k := placement.Key{Model: e.Model, Version: e.Version}
		p.dirty = true
		switch e.Outcome {
		case journal.Published, journal.Duplicate:
			delete(p.attempts, k)
			delete(p.retryAt, k)
		case journal.Rejected:
			until := now.Add(time.Duration(p.cfg.FailureBackoff))
			p.failures[k] = placement.StatusFailure{Model: k.Model, Version: k.Version, Reason: "archive rejected: " + journal.Truncate(e.Reason, 512), At: now.UTC(), Until: until.UTC()}
			p.retryAt[k] = until
		case journal.Failed, journal.Abandoned, journal.Conflict:
			p.attempts[k]++
			p.retryAt[k] = now.Add(p.s.bo(p.attempts[k]))
		}
	}
}

// scanDisk lists the published versions (numeric directories) and their sizes.
func (p *placer) scanDisk() error {
	models, err := p.s.store.Models()
	if err != nil {
		return err
	}
	seen := map[placement.Key]bool{}
	var errs []error
	for _, m := range models {
		vs, err := p.s.store.Versions(m)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, v := range vs {
			k := placement.Key{Model: m, Version: v}
			seen[k] = true
			if _, ok := p.disk[k]; ok {
				continue
			}
			n, err := dirBytes(p.s.store.VersionDir(m, v))
			if err != nil {
				errs = append(errs, err)
			}
			p.disk[k] = n
			if _, ok := p.lastUsed[k]; !ok {
				// Found on disk (startup, or just published): it counts as used now.
				p.lastUsed[k] = time.Now()
			}
		}
	}
	for k := range p.disk {
		if !seen[k] {
			delete(p.disk, k)
			delete(p.lastUsed, k)
			delete(p.unloadWait, k)
		}
	}
	return errors.Join(errs...)
}

func dirBytes(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			n += info.Size()
		}
		return nil
	})
	return n, err
}

// fetchMissing submits a fetch for each assigned version not on disk (through the
// same verified pipeline as notifications), as far as free slots allow, once a
// lookup (started here, run beside the loop) has found its object. It reports
// whether any fetch or lookup is in flight.
func (p *placer) fetchMissing(ctx context.Context, view *placement.HostView, now time.Time) bool {
	p.mu.Lock()
	found := p.found
	p.found = map[placement.Key]lookup{}
	p.mu.Unlock()
	defer func() {
		// A lookup whose version waits for a slot stays for the next step, up to
		// lookupTTL (the object may be replaced meanwhile).
		p.mu.Lock()
		for k, l := range found {
			if _, newer := p.found[k]; !newer && now.Sub(l.at) < lookupTTL {
				p.found[k] = l
			}
		}
		p.mu.Unlock()
	}()
	for _, e := range view.Assignment.Entries {
		k := e.Key
		if _, ok := p.disk[k]; ok {
			continue
		}
		p.mu.Lock()
		busy := p.inflight[k]
		p.mu.Unlock()
		if busy || now.Before(p.retryAt[k]) {
			continue
		}
		if len(p.s.slots) == cap(p.s.slots) {
			return true // all slots busy: a finished job wakes the loop
		}
		l, ok := found[k]
		if !ok {
			p.startLookup(ctx, k)
			continue
		}
		switch {
		case l.err != nil:
			delete(found, k)
			p.log.Warn("placement: cannot find the version's object; retrying", "model", k.Model, "version", k.Version, "err", l.err)
			p.attempts[k]++
			p.retryAt[k] = now.Add(p.s.bo(p.attempts[k]))
			continue
		case l.cand == nil:
			delete(found, k)
			p.attempts[k]++
			p.retryAt[k] = now.Add(p.s.bo(p.attempts[k]))
			p.failure(k, now, fmt.Sprintf("assigned, but no object in s3://%s/%s names this version", p.s.cfg.Bucket, p.s.layout.Prefix()))
			continue
		}
		c := *l.cand
		if why, bad := p.s.rejected.get(c.key, c.etag); bad {
			delete(found, k)
			p.retryAt[k] = now.Add(time.Duration(p.cfg.FailureBackoff))
			p.failure(k, now, "archive rejected before (same ETag): "+journal.Truncate(why, 512))
			continue
		}
		select {
		case p.s.slots <- struct{}{}:
		default:
			return true // all slots busy: a finished job wakes the loop
		}
		delete(found, k)
		p.mu.Lock()
		p.inflight[k] = true
		p.mu.Unlock()
		p.s.submit(job{model: k.Model, version: k.Version, bucket: p.s.cfg.Bucket, key: c.key, etag: c.etag,
			trigger: triggerPlacement, queued: now, note: "assigned to this host"})
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.inflight) > 0 || len(p.looking) > 0
}

// lookup is where an assigned version's object was found: cand nil if nowhere.
type lookup struct {
	cand *candidate
	err  error
	at   time.Time
}

const (
	// maxLookups bounds the object lookups in flight.
	maxLookups = 8
	// lookupTTL is how long a lookup stands for the bucket while its version
	// waits for a fetch slot.
	lookupTTL = 10 * time.Second
)

// startLookup finds k's object in a goroutine, unless it is being looked up or
// maxLookups are in flight (the loop asks again on its next step); the result
// wakes the loop.
func (p *placer) startLookup(ctx context.Context, k placement.Key) {
	p.mu.Lock()
	if p.looking[k] || len(p.looking) >= maxLookups {
		p.mu.Unlock()
		return
	}
	p.looking[k] = true
	p.mu.Unlock()
	p.lookWG.Add(1)
	go func() {
		defer p.lookWG.Done()
		c, err := p.findObject(ctx, k)
		p.mu.Lock()
		delete(p.looking, k)
		p.found[k] = lookup{cand: c, err: err, at: time.Now()}
		p.mu.Unlock()
		p.wake()
	}()
}

// findObject finds k's object: a HEAD of each layout's key for it, in layout
// order (one request however large the bucket), else, for a key written
// differently (a zero-padded version, say), a listing of the model's prefixes.
// nil, nil: no object names the version.
func (p *placer) findObject(ctx context.Context, k placement.Key) (*candidate, error) {
	for _, key := range p.s.layout.Keys(k.Model, k.Version) {
		info, err := head(ctx, p.s.deps.S3, p.s.cfg.Bucket, key)
		if errors.Is(err, ErrObjectGone) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return &candidate{version: k.Version, key: key, etag: info.ETag}, nil
	}
	cands, err := p.listModel(ctx, k.Model)
	if err != nil {
		return nil, err
	}
	if c, ok := cands[k.Version]; ok {
		return &c, nil
	}
	return nil, nil
}

func (p *placer) failure(k placement.Key, now time.Time, reason string) {
	if f, ok := p.failures[k]; ok && f.Reason == reason && now.Before(f.Until) {
		return
	}
	p.log.Warn("placement: assigned version not loadable here", "model", k.Model, "version", k.Version, "reason", reason)
	p.failures[k] = placement.StatusFailure{Model: k.Model, Version: k.Version, Reason: reason, At: now.UTC(),
		Until: now.Add(time.Duration(p.cfg.FailureBackoff)).UTC()}
	p.dirty = true
}

// modelPrefixes are the listing prefixes that hold a model's objects under the
// configured layouts: each layout up to its first placeholder after {model}.
func (l *Layout) modelPrefixes(model string) []string {
	var out []string
	for _, pat := range l.patterns {
		x := pat
		if strings.HasPrefix(x, "{prefix}/") {
			x = l.Prefix() + strings.TrimPrefix(x, "{prefix}/")
		} else {
			x = strings.ReplaceAll(x, "{prefix}", l.prefix)
		}
		x = strings.Replace(x, "{model}", model, 1)
		if i := strings.Index(x, "{"); i >= 0 {
			x = x[:i]
		}
		out = append(out, x)
	}
	slices.Sort(out)
	// Drop a prefix another one covers.
	var keep []string
	for _, x := range out {
		if len(keep) > 0 && strings.HasPrefix(x, keep[len(keep)-1]) {
			continue
		}
		keep = append(keep, x)
	}
	return keep
}

// listModel lists a model's versions in the bucket: version -> object.
func (p *placer) listModel(ctx context.Context, model string) (map[int64]candidate, error) {
	out := map[int64]candidate{}
	for _, prefix := range p.s.layout.modelPrefixes(model) {
		in := &s3.ListObjectsV2Input{Bucket: aws.String(p.s.cfg.Bucket), Prefix: aws.String(prefix)}
		for {
			page, err := p.s.deps.S3.ListObjectsV2(ctx, in)
			if err != nil {
				return nil, err
			}
			for _, o := range page.Contents {
				key := aws.ToString(o.Key)
				m, v, err := p.s.layout.Parse(key)
				if err != nil || m != model {
					continue
				}
				if _, dup := out[v]; !dup { // the same version under two layouts: first wins
					out[v] = candidate{version: v, key: key, etag: strings.Trim(aws.ToString(o.ETag), `"`)}
				}
			}
			if !aws.ToBool(page.IsTruncated) || page.NextContinuationToken == nil {
				break
			}
			in.ContinuationToken = page.NextContinuationToken
		}
	}
	return out, nil
}

// applyConfig hands the reloader the model config of the assigned versions that
// are on disk (a model with none yet is left out: TF Serving would block the
// reload waiting for it), when it changed or the last reload failed. Versions new
// to it are timed from now until TF Serving reports them AVAILABLE.
func (p *placer) applyConfig(view *placement.HostView, assigned map[placement.Key]bool) {
	byModel := map[string][]int64{}
	loading := false
	for _, e := range view.Assignment.Entries {
		if _, ok := p.disk[e.Key]; ok {
			byModel[e.Model] = append(byModel[e.Model], e.Version)
			loading = loading || p.state(e.Key).GetState() != servingpb.ModelVersionStatus_AVAILABLE
		}
	}
	// Draining versions stay until their delay ends, or until a version of the
	// config is not AVAILABLE yet: its load may need the memory the controller
	// already counts as free.
	now := time.Now()
	for _, k := range slices.SortedFunc(maps.Keys(p.draining), compareKeys) {
		_, onDisk := p.disk[k]
		switch {
		case !onDisk || !now.Before(p.draining[k]):
			delete(p.draining, k)
		case loading:
			p.log.Info("placement: unloading a draining version early: an assigned version is loading and may need its memory",
				"model", k.Model, "version", k.Version, "drain_left", p.draining[k].Sub(now).Round(time.Millisecond))
			delete(p.draining, k)
		default:
			byModel[k.Model] = append(byModel[k.Model], k.Version)
		}
	}
	models := make([]reload.Model, 0, len(byModel))
	for _, m := range slices.Sorted(maps.Keys(byModel)) {
		vs := byModel[m]
		slices.Sort(vs)
		models = append(models, reload.Model{Name: m, Versions: vs})
	}
	for k := range p.configured {
		if !assigned[k] {
			delete(p.configured, k)
		}
	}
	if p.posted != nil && slices.EqualFunc(p.posted, models, func(a, b reload.Model) bool {
		return a.Name == b.Name && slices.Equal(a.Versions, b.Versions)
	}) {
		return
	}
	if p.posted == nil && now.Before(p.reloadRetry) {
		return
	}
	for _, m := range models {
		for _, v := range m.Versions {
			k := placement.Key{Model: m.Name, Version: v}
			if _, ok := p.configured[k]; !ok && p.state(k).GetState() != servingpb.ModelVersionStatus_AVAILABLE {
				p.configured[k] = now
			}
		}
	}
	p.posted = models
	p.mu.Lock()
	p.wantCfg = models
	p.mu.Unlock()
	select {
	case p.wantSig <- struct{}{}:
	default:
	}
}

type reloadResult struct {
	models int
	sent   bool
	err    error
	took   time.Duration
}

// reloader applies the latest wanted config with reload.Reloader.Set, one call at
// a time, each bounded by ReloadTimeout. It runs apart from the loop because TF
// Serving's reload blocks until added models are AVAILABLE (and, for one that
// never loads, until the deadline): status, removals and fetches go on meanwhile.
func (p *placer) reloader(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.wantSig:
		}
		p.mu.Lock()
		models := p.wantCfg
		p.reloading = true
		p.sending = map[placement.Key]bool{}
		for _, m := range models {
			for _, v := range m.Versions {
				p.sending[placement.Key{Model: m.Name, Version: v}] = true
			}
		}
		p.mu.Unlock()
		rctx, cancel := context.WithTimeout(ctx, time.Duration(p.s.cfg.ReloadTimeout))
		start := time.Now()
		sent, err := p.rl.Set(rctx, models)
		cancel()
		p.mu.Lock()
		p.reloading, p.sending = false, nil
		p.reloaded = &reloadResult{models: len(models), sent: sent, err: err, took: time.Since(start)}
		p.mu.Unlock()
		p.wake()
	}
}

// takeReload applies the last reload's outcome: after a failure the config is
// handed over again (TF Serving no longer waits for models it already has). It
// reports whether a reload is running.
func (p *placer) takeReload(ctx context.Context) bool {
	p.mu.Lock()
	r, running := p.reloaded, p.reloading
	p.reloaded = nil
	p.mu.Unlock()
	switch {
	case r == nil:
	case r.err != nil:
		p.reloadFails++
		d := p.s.bo(p.reloadFails)
		if ctx.Err() == nil {
			p.log.Warn("placement: TF Serving reload failed; resending", "models", r.models, "err", r.err, "took", r.took, "retry_in", d)
		}
		p.posted, p.reloadRetry = nil, time.Now().Add(d)
		p.metrics.reload(false)
		p.dirty = true
	case r.sent:
		p.reloadFails = 0
		p.log.Info("placement: TF Serving model config set", "models", r.models, "took", r.took)
		p.metrics.reload(true)
		p.dirty = true
	}
	return running
}

// pollStates asks TF Serving for the state of versions: every model on disk or
// assigned on a full pass, else only models with versions in transition. It
// reports whether any version is still in transition (loading or unloading).
func (p *placer) pollStates(ctx context.Context, full bool, assigned map[placement.Key]bool) bool {
	models := map[string]bool{}
	if full {
		for k := range p.disk {
			models[k.Model] = true
		}
		for k := range assigned {
			models[k.Model] = true
		}
	} else {
		for k := range p.configured {
			models[k.Model] = true
		}
		for k := range p.disk {
			if st := p.state(k); !assigned[k] && !unloaded(st) {
				models[k.Model] = true // unassigned, still loaded: unloading
			}
		}
	}
	now := time.Now()
	names := slices.Sorted(maps.Keys(models))
	answers := make([]map[int64]*servingpb.ModelVersionStatus, len(names))
	var g errgroup.Group
	g.SetLimit(statusConcurrency)
	for i, m := range names {
		g.Go(func() error {
			sts, err := p.modelStatus(ctx, m)
			if err != nil && ctx.Err() == nil {
				p.log.Debug("placement: GetModelStatus failed", "model", m, "err", err)
			}
			answers[i] = sts // nil on error: keep what we knew
			return nil
		})
	}
	_ = g.Wait()
	for i, m := range names {
		sts := answers[i]
		if sts == nil {
			continue
		}
		old := p.states[m]
		if len(sts) == 0 {
			delete(p.states, m) // TF Serving does not know the model: nothing loaded
		} else {
			p.states[m] = sts
		}
		for v, st := range old {
			if sts[v] == nil || sts[v].GetState() != st.GetState() {
				p.dirty = true
			}
		}
		for v, st := range sts {
			k := placement.Key{Model: m, Version: v}
			if old[v].GetState() != st.GetState() {
				p.dirty = true
			}
			since, pending := p.configured[k]
			switch {
			case st.GetState() == servingpb.ModelVersionStatus_AVAILABLE:
				if pending {
					p.loadSec[k] = now.Sub(since).Seconds()
					delete(p.configured, k)
				}
				delete(p.failures, k)
			case st.GetState() == servingpb.ModelVersionStatus_END && st.GetStatus().GetErrorCode() != 0 && assigned[k]:
				delete(p.configured, k)
				p.failure(k, now, fmt.Sprintf("load failed: %s: %s", codes.Code(st.GetStatus().GetErrorCode()), st.GetStatus().GetErrorMessage()))
			case pending && now.Sub(since) > time.Duration(p.s.cfg.ReloadTimeout):
				p.failure(k, now, fmt.Sprintf("not AVAILABLE %v after it was added to the model config (state %v)", time.Duration(p.s.cfg.ReloadTimeout), st.GetState()))
			}
		}
	}
	if len(p.configured) > 0 {
		return true
	}
	for k := range p.disk {
		if !assigned[k] && !unloaded(p.state(k)) {
			return true
		}
	}
	return false
}

func compareKeys(a, b placement.Key) int {
	return cmp.Or(strings.Compare(a.Model, b.Model), cmp.Compare(a.Version, b.Version))
}

// modelStatus is GetModelStatus for all versions of a model; a model TF Serving
// does not know has none.
func (p *placer) modelStatus(ctx context.Context, model string) (map[int64]*servingpb.ModelVersionStatus, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := p.deps.TFServing.GetModelStatus(cctx, &servingpb.GetModelStatusRequest{ModelSpec: &servingpb.ModelSpec{Name: model}})
	if status.Code(err) == codes.NotFound {
		return map[int64]*servingpb.ModelVersionStatus{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := map[int64]*servingpb.ModelVersionStatus{}
	for _, st := range resp.GetModelVersionStatus() {
		out[st.GetVersion()] = st
	}
	return out, nil
}

// statusConcurrency bounds the GetModelStatus calls of one pass.
const statusConcurrency = 8

func (p *placer) state(k placement.Key) *servingpb.ModelVersionStatus {
	return p.states[k.Model][k.Version]
}

// unloaded: TF Serving holds nothing of the version (ended, or unknown to it).
func unloaded(st *servingpb.ModelVersionStatus) bool {
	return st == nil || st.GetState() == servingpb.ModelVersionStatus_END
}

// versionUnloaded asks TF Serving about one version right before its files go.
func (p *placer) versionUnloaded(ctx context.Context, k placement.Key) (bool, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := p.deps.TFServing.GetModelStatus(cctx, &servingpb.GetModelStatusRequest{ModelSpec: &servingpb.ModelSpec{
		Name: k.Model, VersionChoice: &servingpb.ModelSpec_Version{Version: wrapperspb.Int64(k.Version)}}})
	if status.Code(err) == codes.NotFound {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	for _, st := range resp.GetModelVersionStatus() {
		if st.GetVersion() == k.Version && !unloaded(st) {
			return false, nil
		}
	}
	return true, nil
}

// evict keeps unassigned versions on disk up to CacheBytes, removing the least
// recently assigned beyond it, each only once TF Serving reports it unloaded (and
// no reload naming it is under way). It waits for the oldest to unload before
// taking a newer one, for at most ReloadTimeout.
func (p *placer) evict(ctx context.Context, assigned map[placement.Key]bool, now time.Time) {
	var cached []placement.Key
	var bytes int64
	for k, n := range p.disk {
		if assigned[k] {
			p.lastUsed[k] = now // in use
			delete(p.unloadWait, k)
			continue
		}
		cached = append(cached, k)
		bytes += n
	}
	p.awaiting = false
	if bytes <= p.cfg.CacheBytes {
		return
	}
	slices.SortFunc(cached, func(a, b placement.Key) int {
		if c := p.lastUsed[a].Compare(p.lastUsed[b]); c != 0 {
			return c
		}
		return compareKeys(a, b)
	})
	for _, k := range cached {
		if bytes <= p.cfg.CacheBytes {
			return
		}
		p.mu.Lock()
		fetching, sending := p.inflight[k], p.sending[k] // a reload naming it is under way
		p.mu.Unlock()
		if fetching {
			continue
		}
		ok, err := false, error(nil)
		if !sending {
			ok, err = p.versionUnloaded(ctx, k)
		}
		if err != nil || !ok {
			// Least recently used goes first: wait for this one to unload rather than
			// take a newer one, unless it has been loaded past ReloadTimeout.
			p.awaiting = true
			since, seen := p.unloadWait[k]
			if !seen {
				since = now
				p.unloadWait[k] = now
			}
			if now.Sub(since) < time.Duration(p.s.cfg.ReloadTimeout) {
				p.log.Debug("placement: unassigned version still loaded; kept until TF Serving unloads it", "model", k.Model, "version", k.Version, "err", err)
				return
			}
			p.log.Warn("placement: unassigned version still not unloaded; removing newer ones past it", "model", k.Model, "version", k.Version,
				"waiting", now.Sub(since), "err", err)
			continue
		}
		delete(p.unloadWait, k)
		if err := p.s.store.Remove(k.Model, k.Version); err != nil && !errors.Is(err, os.ErrNotExist) {
			p.log.Warn("placement: removing an unassigned version failed", "model", k.Model, "version", k.Version, "err", err)
			continue
		}
		bytes -= p.disk[k]
		p.metrics.removed.Add(context.Background(), 1)
		p.log.Info("placement: removed an unassigned version", "model", k.Model, "version", k.Version,
			"bytes", p.disk[k], "unassigned_since", p.lastUsed[k], "cache_bytes", bytes)
		delete(p.disk, k)
		delete(p.lastUsed, k)
		delete(p.states[k.Model], k.Version)
		delete(p.loadSec, k)
		p.dirty = true
	}
}

// report writes the host's status to KV: at most once per PollInterval when
// something changed, and on every full pass (the heartbeat readers judge
// freshness by).
func (p *placer) report(ctx context.Context, full bool) {
	now := time.Now()
	if !full && (!p.dirty || now.Sub(p.lastStatus) < time.Duration(p.cfg.PollInterval)) {
		return
	}
	st := placement.HostStatus{Host: p.cfg.Host, Pool: p.cfg.Pool, Updated: now.UTC(), Resident: []placement.StatusVersion{}}
	for m, vs := range p.states {
		for v, s := range vs {
			if s.GetState() != servingpb.ModelVersionStatus_AVAILABLE {
				continue
			}
			k := placement.Key{Model: m, Version: v}
			// Bytes: TF Serving does not report a version's memory; 0 means unknown.
			st.Resident = append(st.Resident, placement.StatusVersion{Model: k.Model, Version: k.Version, LoadSeconds: p.loadSec[k]})
		}
	}
	slices.SortFunc(st.Resident, func(a, b placement.StatusVersion) int {
		return compareKeys(placement.Key{Model: a.Model, Version: a.Version}, placement.Key{Model: b.Model, Version: b.Version})
	})
	for k, f := range p.failures {
		if !now.Before(f.Until) {
			delete(p.failures, k)
			continue
		}
		st.Failures = append(st.Failures, f)
	}
	slices.SortFunc(st.Failures, func(a, b placement.StatusFailure) int {
		return compareKeys(placement.Key{Model: a.Model, Version: a.Version}, placement.Key{Model: b.Model, Version: b.Version})
	})
	var cached int64
	var inCache []placement.Key
	p.mu.Lock()
	assigned := len(p.assigned)
	for k, n := range p.disk {
		st.DiskBytes += n
		if !p.assigned[k] {
			cached += n
			if unloaded(p.state(k)) {
				inCache = append(inCache, k)
			}
		}
	}
	p.mu.Unlock()
	// The disk cache, most recently unassigned first (what evict keeps longest).
	slices.SortFunc(inCache, func(a, b placement.Key) int {
		return cmp.Or(p.lastUsed[b].Compare(p.lastUsed[a]), compareKeys(a, b))
	})
	if len(inCache) > placement.MaxStatusCached {
		st.CachedOmitted = len(inCache) - placement.MaxStatusCached
		inCache = inCache[:placement.MaxStatusCached]
	}
	for _, k := range inCache {
		st.Cached = append(st.Cached, placement.StatusVersion{Model: k.Model, Version: k.Version, Bytes: p.disk[k]})
	}
	p.metrics.assigned.Store(int64(assigned))
	p.metrics.resident.Store(int64(len(st.Resident)))
	p.metrics.failures.Store(int64(len(st.Failures)))
	p.metrics.diskAssigned.Store(st.DiskBytes - cached)
	p.metrics.diskCached.Store(cached)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := p.deps.Store.PutStatus(cctx, st)
	cancel()
	if p.deps.OnStatus != nil {
		p.deps.OnStatus(st, err)
	}
	if err != nil {
		if ctx.Err() == nil {
			p.log.Warn("placement: writing host status failed; keeping the assignment, retrying", "err", err)
		}
		return
	}
	p.lastStatus, p.dirty = now, false
}

// writeCatalog lists the bucket and writes every model version in it, with its
// object size, to the catalog in KV (the controller's input), check-and-set
// against what it read; an unchanged catalog writes nothing. Objects rejected
// before (same ETag) are left out. It returns how many versions the catalog has.
func (p *placer) writeCatalog(ctx context.Context) (int, error) {
	seen := map[placement.Key]bool{}
	var vs []placement.Version
	in := &s3.ListObjectsV2Input{Bucket: aws.String(p.s.cfg.Bucket), Prefix: aws.String(p.s.layout.Prefix())}
	for {
		out, err := p.s.deps.S3.ListObjectsV2(ctx, in)
		if err != nil {
			return 0, err
		}
		for _, o := range out.Contents {
			key := aws.ToString(o.Key)
			m, v, err := p.s.layout.Parse(key)
			if err != nil {
				continue
			}
			if _, bad := p.s.rejected.get(key, strings.Trim(aws.ToString(o.ETag), `"`)); bad {
				continue
			}
			k := placement.Key{Model: m, Version: v}
			if seen[k] {
				continue
			}
			seen[k] = true
			vs = append(vs, placement.Version{Key: k, ObjectBytes: aws.ToInt64(o.Size)})
		}
		if !aws.ToBool(out.IsTruncated) || out.NextContinuationToken == nil {
			break
		}
		in.ContinuationToken = out.NextContinuationToken
	}
	var err error
	for range 3 {
		var prev placement.Written
		if _, prev, err = p.deps.Store.ReadCatalog(ctx); err != nil && !prev.Present {
			return 0, err // a torn catalog (prev present) is overwritten
		}
		if _, err = p.deps.Store.WriteCatalog(ctx, vs, prev); !errors.Is(err, placement.ErrConflict) {
			break
		}
	}
	if err != nil {
		return 0, fmt.Errorf("write the catalog: %w", err)
	}
	p.mu.Lock()
	p.cataloged = seen
	p.mu.Unlock()
	return len(vs), nil
}

// catalogLoop writes the catalog at startup, every CatchUpInterval (0: never
// again on a timer), and soon after a notification names a version the catalog
// lacks (at most once per catalogMinGap, so a burst of uploads costs a few listings).
func (p *placer) catalogLoop(ctx context.Context) {
	for {
		start := time.Now()
		n, err := p.writeCatalog(ctx)
		if err != nil && ctx.Err() == nil {
			p.log.Warn("catalog: listing or writing failed; next pass retries", "bucket", p.s.cfg.Bucket, "err", err)
		} else if err == nil {
			p.log.Info("catalog written from the bucket listing", "bucket", p.s.cfg.Bucket, "versions", n)
		}
		if p.waitCatalog(ctx, start) != nil {
			return
		}
	}
}

// waitCatalog waits for the next catalog pass (see catalogLoop).
func (p *placer) waitCatalog(ctx context.Context, last time.Time) error {
	var tick <-chan time.Time
	if iv := time.Duration(p.s.cfg.CatchUpInterval); iv > 0 {
		t := time.NewTimer(iv)
		defer t.Stop()
		tick = t.C
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-tick:
		return nil
	case <-p.catalogKick:
		return sleepCtx(ctx, catalogMinGap-time.Since(last))
	}
}

// catalogMinGap is the least time between two catalog listings asked for by
// notifications.
const catalogMinGap = time.Second
