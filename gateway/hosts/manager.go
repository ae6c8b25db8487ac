package hosts

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/tfgate/tfgate/gateway/discovery"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

// Options are the Manager's dependencies. Every field is optional.
type Options struct {
	// Logger; nil discards.
	Logger *slog.Logger
	// MeterProvider; nil is a no-op.
	MeterProvider metric.MeterProvider
	// NewDiscoverer overrides how a pool's Discoverer is built (tests). Default:
	// discovery.NewStatic or discovery.NewConsul from the pool's config.
	NewDiscoverer func(pool string, pc PoolConfig) (discovery.Discoverer, error)
	// DialOptions are appended to the defaults (insecure transport credentials,
	// the message size limits), so transport credentials given here win.
	DialOptions []grpc.DialOption
	// Rand returns a uniform int in [0, n); default math/rand/v2.IntN.
	Rand func(n int) int
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Manager owns the backend hosts: discovery per pool, one gRPC connection per
// address, readiness polling, and host picking with retry, ejection and hedging.
type Manager struct {
	cfg  Config
	log  *slog.Logger
	met  *metrics
	dial []grpc.DialOption
	rnd  func(int) int
	now  func() time.Time
	disc map[string]discovery.Discoverer

	snap    readinessPtr
	closed  atomic.Bool // Run has ended
	changes chan struct{}
	// updated is closed (and replaced) when the routing view changes: the
	// broadcast form of changes, for any number of waiters (Updated).
	updated atomic.Pointer[chan struct{}]
	pollNow chan struct{}
	ready   chan struct{}
	hedge   *budget

	// quota is the resync polls per host per interval tick.
	quota int
	// prioBatch is the priority polls per host in the next round after one that
	// left priority work (0: minPriorityBatch). Owned by the poller.
	prioBatch int
	// wants: versions asked for by Want and not yet AVAILABLE on any host; at most
	// wantsPerModel times the number of models. Guarded by wantMu (never held
	// while taking mu).
	wantMu  sync.Mutex
	wants   map[versionKey]struct{}
	nModels atomic.Int64

	mu        sync.Mutex
	models    []string
	members   map[string][]string // pool -> addrs from discovery
	delivered map[string]bool     // pools whose discoverer has sent once
	hosts     map[string]*host    // addr -> host
	// serviceIDs: addr -> Consul service ID, for the hosts discovery gave one.
	serviceIDs map[string]string
	// placed: with placement on (SetPlacement), Consul service ID -> the versions
	// the assignment gives that host; a host in it is routed only those. nil: off.
	placed    map[string]map[versionKey]bool
	running   bool
	stopped   bool
	readyDone bool
}

// New validates cfg and builds the discoverers; Run starts the work.
func New(cfg Config, opts Options) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Rand == nil {
		opts.Rand = rand.IntN
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	met, err := newMetrics(opts.MeterProvider)
	if err != nil {
		return nil, err
	}
	m := &Manager{
		cfg: cfg,
		log: opts.Logger,
		met: met,
		dial: append([]grpc.DialOption{
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			// grpc-go's default reconnect backoff grows to 120 s, so a TF Serving host
			// that starts after the gateway stayed unready for tens of seconds. Hosts
			// that are really gone leave through discovery, so retry them briskly.
			grpc.WithConnectParams(grpc.ConnectParams{
				Backoff: backoff.Config{
					BaseDelay:  100 * time.Millisecond,
					Multiplier: 1.6,
					Jitter:     0.2,
					MaxDelay:   2 * time.Second,
				},
				MinConnectTimeout: 5 * time.Second,
			}),
			grpc.WithDefaultCallOptions(
				grpc.MaxCallRecvMsgSize(cfg.MaxRecvMsgSize),
				grpc.MaxCallSendMsgSize(cfg.MaxSendMsgSize)),
		}, opts.DialOptions...),
		rnd:        opts.Rand,
		now:        opts.Now,
		disc:       map[string]discovery.Discoverer{},
		changes:    make(chan struct{}, 1),
		pollNow:    make(chan struct{}, 1),
		ready:      make(chan struct{}),
		hedge:      newBudget(cfg.Hedging.BudgetPercent),
		members:    map[string][]string{},
		delivered:  map[string]bool{},
		hosts:      map[string]*host{},
		serviceIDs: map[string]string{},
		quota:      resyncQuota(cfg.Readiness),
		wants:      map[versionKey]struct{}{},
	}
	m.snap.Store(emptyReadiness())
	newDisc := opts.NewDiscoverer
	if newDisc == nil {
		newDisc = func(pool string, pc PoolConfig) (discovery.Discoverer, error) {
			if pc.Consul != nil {
				return discovery.NewConsul(discovery.ConsulConfig{
					Client: cfg.Consul, Service: pc.Consul.Service, Tag: pc.Consul.Tag,
					WaitTime: cfg.ConsulWaitTime,
				}, opts.Logger.With("pool", pool), opts.MeterProvider)
			}
			return discovery.NewStatic(pc.Static), nil
		}
	}
	var errs []error
	for name, pc := range cfg.Pools {
		d, err := newDisc(name, pc)
		if err != nil {
			errs = append(errs, fmt.Errorf("pool %q: %w", name, err))
			continue
		}
		m.disc[name] = d
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return m, nil
}

// Run discovers hosts, keeps connections and polls readiness until ctx is
// cancelled; then it closes every connection (after its in-flight calls) and
// returns nil. It may be called once.
func (m *Manager) Run(ctx context.Context) error {
	m.mu.Lock()
	if m.running {
		m.mu.Unlock()
		return errors.New("hosts: Run called twice")
	}
	m.running = true
	m.mu.Unlock()

	reg, err := m.met.register(m)
	if err != nil {
		return err
	}
	defer func() { _ = reg.Unregister() }()

	g, gctx := errgroup.WithContext(ctx)
	for pool, d := range m.disc {
		ch := make(chan []discovery.Endpoint)
		g.Go(func() error {
			if err := d.Run(gctx, ch); err != nil {
				return fmt.Errorf("pool %q discovery: %w", pool, err)
			}
			return nil
		})
		g.Go(func() error {
			for {
				select {
				case <-gctx.Done():
					return nil
				case eps := <-ch:
					m.setPool(pool, eps)
				}
			}
		})
	}
	g.Go(func() error { return m.pollLoop(gctx) })
	err = g.Wait()

	m.closed.Store(true)
	m.mu.Lock()
	m.stopped = true
	for addr, h := range m.hosts {
		h.remove()
		delete(m.hosts, addr)
	}
	m.members = map[string][]string{}
	m.mu.Unlock()
	m.rebuild()
	return err
}

// SetModels sets the models whose readiness is polled on every host (the models
// the gateway routes). Models no longer listed are forgotten.
func (m *Manager) SetModels(models []string) {
	ms := slices.Clone(models)
	slices.Sort(ms)
	ms = slices.Compact(ms)
	m.mu.Lock()
	changed := !slices.Equal(ms, m.models)
	old := m.models
	m.models = ms
	m.nModels.Store(int64(len(ms)))
	if changed {
		for _, h := range m.hosts {
			for model := range h.avail {
				if !served(ms, model) {
					delete(h.avail, model)
					delete(h.pollFailures, model)
				}
			}
			for model := range h.pending {
				if !served(ms, model) {
					delete(h.pending, model)
				}
			}
			for _, model := range ms {
				if !served(old, model) {
					h.pending[model] = struct{}{} // new: poll at once
				}
			}
		}
	}
	m.mu.Unlock()
	if changed {
		m.rebuild()
		m.kickPoll()
	}
}

// SetPlacement gives readiness placement's assignment: Consul service ID -> model
// -> the versions assigned to that host (draining copies included). A host named
// in it is routed only its assigned versions, from now on: a version taken off a
// host is about to be unloaded there (its sidecar drains it first), so requests
// stop going to it before the unload rather than after the next poll notices.
// Hosts not named (not in the assignment, no service ID, static pools) are
// routed whatever they report AVAILABLE. nil turns the filter off.
func (m *Manager) SetPlacement(assigned map[string]map[string][]int64) {
	var placed map[string]map[versionKey]bool
	if assigned != nil {
		placed = make(map[string]map[versionKey]bool, len(assigned))
		for id, models := range assigned {
			ks := map[versionKey]bool{}
			for model, vs := range models {
				for _, v := range vs {
					ks[versionKey{model, v}] = true
				}
			}
			placed[id] = ks
		}
	}
	m.mu.Lock()
	forgot := m.placed != nil && placed != nil && m.forgetReassigned(m.placed, placed)
	m.placed = placed
	m.mu.Unlock()
	m.rebuild()
	if forgot {
		m.kickPoll()
	}
}

// forgetReassigned drops from readiness every version that the new assignment
// gives a host that the old one did not, and re-polls its model there. What a
// host reported AVAILABLE before the version was taken off it says nothing now:
// its sidecar may have unloaded it since, so the last poll is stale, and routing
// on it would send the version's first requests to a host without it (NOT_FOUND)
// while the host loads it again. A copy that is still loaded (re-assigned during
// its drain) is routable again after the next poll round. Called with m.mu held.
func (m *Manager) forgetReassigned(old, placed map[string]map[versionKey]bool) bool {
	forgot := false
	for addr, id := range m.serviceIDs {
		h := m.hosts[addr]
		if h == nil {
			continue
		}
		was := old[id]
		for k := range placed[id] {
			if was[k] {
				continue
			}
			vs := h.avail[k.model]
			i := slices.Index(vs, k.version)
			if i < 0 {
				continue
			}
			if len(vs) == 1 {
				delete(h.avail, k.model)
			} else {
				h.avail[k.model] = slices.Delete(slices.Clone(vs), i, i+1)
			}
			if served(m.models, k.model) {
				h.pending[k.model] = struct{}{}
			}
			forgot = true
		}
	}
	return forgot
}

// Snapshot returns the current readiness view (immutable).
func (m *Manager) Snapshot() *Readiness { return m.snap.Load() }

// Changes delivers a (coalesced) notification whenever the readiness view seen by
// a router changes; re-read Snapshot after each.
func (m *Manager) Changes() <-chan struct{} { return m.changes }

// Ready is closed once every pool's discovery has reported and a readiness poll
// round has completed after that. Every (host, model) not yet answered is in that
// round's priority set, so it means every pair was polled once (answered or
// failed), except that a host failing at the transport level stops being polled
// for the rest of the round (it stays pending).
func (m *Manager) Ready() <-chan struct{} { return m.ready }

// WaitReady waits for Ready or ctx.
func (m *Manager) WaitReady(ctx context.Context) error {
	select {
	case <-m.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (m *Manager) kickPoll() {
	select {
	case m.pollNow <- struct{}{}:
	default:
	}
}

// setPool applies a discovery update: connections for new addresses, removal
// (close when idle) of addresses in no pool any more.
func (m *Manager) setPool(pool string, eps []discovery.Endpoint) {
	addrs := make([]string, 0, len(eps))
	for _, e := range eps {
		addrs = append(addrs, e.Addr)
	}
	added := false
	m.mu.Lock()
	if m.stopped {
		m.mu.Unlock()
		return
	}
	m.members[pool] = addrs
	m.delivered[pool] = true
	for _, e := range eps {
		if e.ServiceID != "" {
			m.serviceIDs[e.Addr] = e.ServiceID
		}
	}
	inUse := map[string]bool{}
	for _, as := range m.members {
		for _, a := range as {
			inUse[a] = true
		}
	}
	for a := range inUse {
		if _, ok := m.hosts[a]; ok {
			continue
		}
		conn, err := grpc.NewClient(a, m.dial...)
		if err != nil {
			m.log.Error("cannot create backend connection", "addr", a, "err", err)
			continue
		}
		h := newHost(a, conn)
		for _, model := range m.models {
			h.pending[model] = struct{}{} // never answered: poll at once
		}
		m.hosts[a] = h
		added = true
		m.log.Info("backend host added", "addr", a, "pool", pool)
	}
	for a, h := range m.hosts {
		if !inUse[a] {
			h.remove()
			delete(m.hosts, a)
			delete(m.serviceIDs, a)
			m.log.Info("backend host removed", "addr", a, "pool", pool)
		}
	}
	m.mu.Unlock()
	m.rebuild()
	if added {
		m.kickPoll()
	}
}

// rebuild publishes a new snapshot and notifies Changes when the view changed.
func (m *Manager) rebuild() {
	m.mu.Lock()
	var unrouted func(string, versionKey) bool
	if m.placed != nil {
		unrouted = func(addr string, k versionKey) bool {
			as, ok := m.placed[m.serviceIDs[addr]]
			return ok && !as[k]
		}
	}
	r := buildReadinessPlaced(m.members, m.hosts, m.now(), unrouted)
	old := m.snap.Swap(r)
	m.mu.Unlock()
	if !sameView(old, r) {
		select {
		case m.changes <- struct{}{}:
		default:
		}
		if p := m.updated.Swap(nil); p != nil {
			close(*p)
		}
	}
}

// Updated returns a channel closed the next time the routing view changes (a
// version becomes AVAILABLE on a host, or stops being routable there). Unlike
// Changes, any number of goroutines may wait on it: read Snapshot, then wait,
// taking the channel before reading Snapshot so that no change is missed.
func (m *Manager) Updated() <-chan struct{} {
	for {
		if p := m.updated.Load(); p != nil {
			return *p
		}
		ch := make(chan struct{})
		if m.updated.CompareAndSwap(nil, &ch) {
			return ch
		}
	}
}

// Predict sends req to a host in the first of pools that has req's version
// AVAILABLE, retrying once on a different host after a transport failure. It
// returns the response, the host that served it, and an error matching the
// package's sentinels or carrying the backend's gRPC status.
func (m *Manager) Predict(ctx context.Context, pools []string, req *servingpb.PredictRequest) (*servingpb.PredictResponse, string, error) {
	return invoke(m, ctx, "Predict", pools, req.GetModelSpec(), func(ctx context.Context, h *host) (*servingpb.PredictResponse, error) {
		return h.pred.Predict(ctx, req)
	})
}

// GetModelMetadata is Predict's counterpart for metadata (signatures).
func (m *Manager) GetModelMetadata(ctx context.Context, pools []string, req *servingpb.GetModelMetadataRequest) (*servingpb.GetModelMetadataResponse, string, error) {
	return invoke(m, ctx, "GetModelMetadata", pools, req.GetModelSpec(), func(ctx context.Context, h *host) (*servingpb.GetModelMetadataResponse, error) {
		return h.pred.GetModelMetadata(ctx, req)
	})
}

func specKey(spec *servingpb.ModelSpec) (versionKey, error) {
	v, ok := spec.GetVersionChoice().(*servingpb.ModelSpec_Version)
	if spec.GetName() == "" || !ok || v.Version == nil {
		return versionKey{}, fmt.Errorf("%w: model %q", ErrNoVersion, spec.GetName())
	}
	return versionKey{spec.GetName(), v.Version.GetValue()}, nil
}

// retryable: the call failed before or while reaching the host's model (transport
// UNAVAILABLE, a connection closed under it, or the host no longer having the
// version), so another host may serve it.
func retryable(ctx context.Context, err error) (retry, hostFault bool) {
	if ctx.Err() != nil {
		return false, false
	}
	switch status.Code(err) {
	case codes.Unavailable:
		return true, true
	case codes.Canceled: // connection closed by discovery removal, not by the caller
		return true, false
	case codes.NotFound: // "Servable not found": readiness is behind the host
		return true, false
	}
	return false, false
}

func (m *Manager) deadlineAllows(ctx context.Context) bool {
	dl, ok := ctx.Deadline()
	return !ok || dl.Sub(m.now()) > m.cfg.Retry.MinRemaining
}

func invoke[T any](m *Manager, ctx context.Context, method string, pools []string, spec *servingpb.ModelSpec, call func(context.Context, *host) (T, error)) (T, string, error) {
	var zero T
	if m.closed.Load() {
		return zero, "", ErrClosed
	}
	k, err := specKey(spec)
	if err != nil {
		return zero, "", err
	}
	r := m.snap.Load()
	for _, p := range pools {
		if _, ok := m.cfg.Pools[p]; !ok {
			return zero, "", fmt.Errorf("%w: %q (configured: %v)", ErrUnknownPool, p, m.poolNames())
		}
	}
	var (
		triedBuf [4]*host
		tried    = triedBuf[:0]
		lastErr  error
		lastHost string
		attempts int
	)
	for attempts < m.cfg.Retry.MaxAttempts {
		if attempts > 0 && !m.deadlineAllows(ctx) {
			break
		}
		h, any := r.pick(pools, k, tried, m.now().UnixNano(), m.rnd)
		if h == nil {
			if lastErr != nil {
				break
			}
			if !any {
				return zero, "", fmt.Errorf("%w: %s", ErrVersionUnavailable, r.Explain(k.model, k.version, pools))
			}
			return zero, "", fmt.Errorf("%w: model %q version %d in pools %v: every host with it is ejected or tried",
				ErrNoHost, k.model, k.version, pools)
		}
		tried = append(tried, h)
		if !h.acquire() {
			continue // closed after removal; pick another without spending an attempt
		}
		if attempts > 0 {
			m.met.retries.Add(ctx, 1, metric.WithAttributeSet(m.met.methodAttrs(method)))
		}
		attempts++
		res, served, err := hedged(m, ctx, pools, k, h, &tried, call)
		if err == nil {
			return res, served.addr, nil
		}
		lastErr, lastHost = &HostError{Addr: served.addr, Err: err}, served.addr
		retry, _ := retryable(ctx, err)
		if !retry {
			return zero, lastHost, lastErr
		}
		r = m.snap.Load()
	}
	if lastErr == nil {
		lastErr = fmt.Errorf("%w: model %q version %d in pools %v", ErrNoHost, k.model, k.version, pools)
	}
	return zero, lastHost, lastErr
}

// once runs one call on an acquired host and accounts for the outcome.
func once[T any](m *Manager, ctx context.Context, h *host, model string, call func(context.Context, *host) (T, error)) (T, error) {
	defer h.release()
	res, err := call(ctx, h)
	if err == nil {
		h.succeeded()
		return res, nil
	}
	if retry, fault := retryable(ctx, err); fault {
		if d := h.failed(m.cfg.Ejection, m.now()); d > 0 {
			m.met.ejections.Add(ctx, 1)
			m.log.Warn("backend host ejected", "addr", h.addr, "for", d, "err", err)
			m.rebuild()
		}
	} else if retry && status.Code(err) == codes.NotFound {
		// The host no longer has what readiness says it has: re-poll it now.
		h.markNotFound(model, int(m.nModels.Load()))
		m.kickPoll()
	}
	return res, err
}

func (m *Manager) poolNames() []string {
	names := make([]string, 0, len(m.cfg.Pools))
	for n := range m.cfg.Pools {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
