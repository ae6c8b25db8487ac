package placement

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/hashicorp/consul/api"
	"go.opentelemetry.io/otel/metric"
)

// ControllerConfig is what a controller needs besides the Consul client.
type ControllerConfig struct {
	// ID names this controller in the lock value and logs (e.g. the gateway's
	// instance ID). Required.
	ID string
	// Policy is the placement policy (the routing config's placement: section).
	Policy Config
	// Store says where placement lives in KV.
	Store StoreConfig
	// Hosts lists the serving hosts with their capacity (see ConsulHosts). Required.
	Hosts func(ctx context.Context) ([]Host, error)
	// Catalog lists the model versions. Default: the catalog in KV (Store.ReadCatalog).
	Catalog func(ctx context.Context) ([]Version, error)
	// Routing returns the versions the routing config needs (and pins) and each
	// model's pool. Default: none, every model in Policy.DefaultPool.
	Routing func() ([]Requirement, map[string]string)
	// LocalDemand, when set, returns demand this process has seen that its last
	// demand report in KV may not carry yet (requests since it was written, such
	// as a moment-old request for a version no host has). The leader merges it
	// into every decision, so that a cold request on the leading gateway is
	// placed by the decision it triggers, not by the next one, which the write of
	// its demand report triggers at least the report's minimum gap later. Each
	// version's rate is the larger of the two, its last use the later. nil: KV only.
	LocalDemand func() map[Key]Demand
	// Interval is the longest time between decisions while leading; a demand
	// report or Trigger decides sooner. Default 10s.
	Interval time.Duration
	// SessionTTL is the leader session's TTL: a leader that dies (kill -9) is
	// replaced within about this long (Consul may take up to twice it). Consul's
	// minimum is 10s. Default 10s.
	SessionTTL time.Duration
	// LockDelay is how long Consul keeps the lock from a new holder after the
	// previous session is invalidated. Safety does not depend on it (every write
	// checks the session); it only spaces leaders. Default 1s.
	LockDelay time.Duration
	// LockWait is the blocking-query wait of a follower watching the lock; it also
	// bounds how long a follower's Run takes to return after ctx is done (the
	// consul/api lock does not take a context). Default 2s.
	LockWait time.Duration
	// ReportTTL: host status and demand reports older than this are ignored (a
	// sidecar or gateway that stopped reporting is not counted on). Default 1m.
	ReportTTL time.Duration
	// RequireStatus freezes hosts whose sidecar has no status report newer than
	// ReportTTL: they keep their versions and take no new ones (nothing would load
	// them), and their copies are not counted, so each of their versions gets its
	// copies on live hosts. Turn it on once every host's sidecar reports. Default
	// false.
	RequireStatus bool
	// RetryMin and RetryMax bound the delay after a failed campaign or decision. Defaults 200ms, 10s.
	RetryMin, RetryMax time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
	// MeterProvider receives the controller's metrics; nil means no-op.
	MeterProvider metric.MeterProvider
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// ErrEmptyInput: the controller got no hosts or no catalog while versions are
// placed, and keeps the placement rather than unload everything.
var ErrEmptyInput = errors.New("placement input empty")

// Controller defaults.
const (
	DefaultInterval   = 10 * time.Second
	DefaultSessionTTL = 10 * time.Second
	DefaultLockDelay  = time.Second
	DefaultReportTTL  = time.Minute
)

// Controller is the one decision-maker: it campaigns for the leader lock and,
// while it holds it, reads the inputs, runs Decide and writes the assignment.
// Any number of controllers may run (one per gateway); one leads.
type Controller struct {
	cfg     ControllerConfig
	client  *api.Client
	store   *Store
	trigger chan struct{}

	leader  atomic.Bool
	last    atomic.Pointer[Decision]
	session atomic.Value // string: the session while leading

	mu      sync.Mutex
	written int // decisions written while leading, for tests and metrics
	failed  int // decisions that failed or were refused

	reportSum uint64 // of the last report written (lead loop only)
	metrics   *controllerMetrics
}

// NewController validates cfg and returns a controller; Run starts it.
func NewController(client *api.Client, cfg ControllerConfig) (*Controller, error) {
	var errs []error
	if cfg.ID == "" {
		errs = append(errs, fmt.Errorf("%w: controller ID is required", ErrConfig))
	}
	if cfg.Hosts == nil {
		errs = append(errs, fmt.Errorf("%w: a host source is required", ErrConfig))
	}
	if cfg.SessionTTL != 0 && cfg.SessionTTL < 10*time.Second {
		errs = append(errs, fmt.Errorf("%w: session TTL %v: Consul's minimum is 10s", ErrConfig, cfg.SessionTTL))
	}
	if err := cfg.Policy.WithDefaults().Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	if cfg.LockDelay <= 0 {
		cfg.LockDelay = DefaultLockDelay
	}
	if cfg.LockWait <= 0 {
		cfg.LockWait = 2 * time.Second
	}
	if cfg.ReportTTL <= 0 {
		cfg.ReportTTL = DefaultReportTTL
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = 200 * time.Millisecond
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Store.Logger == nil {
		cfg.Store.Logger = cfg.Logger
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Controller{cfg: cfg, client: client, store: NewStore(client, cfg.Store), trigger: make(chan struct{}, 1)}
	m, err := newControllerMetrics(cfg.MeterProvider, c)
	if err != nil {
		return nil, fmt.Errorf("placement metrics: %w", err)
	}
	c.metrics = m
	if cfg.Catalog == nil {
		var cache CatalogCache
		c.cfg.Catalog = func(ctx context.Context) ([]Version, error) {
			return c.store.ReadCatalogCached(ctx, &cache)
		}
	}
	c.session.Store("")
	return c, nil
}

// Store is the controller's KV store (for ListPlacement readers and tests).
func (c *Controller) Store() *Store { return c.store }

// IsLeader says whether this controller holds the lock now.
func (c *Controller) IsLeader() bool { return c.leader.Load() }

// ReportTTL is how old a host status or demand report may be and still count.
func (c *Controller) ReportTTL() time.Duration { return c.cfg.ReportTTL }

// Last is the last decision this controller wrote while leading (nil if none).
func (c *Controller) Last() *Decision { return c.last.Load() }

// Trigger asks the leader to decide now (a cold version was requested). It never
// blocks; on a follower it does nothing useful.
func (c *Controller) Trigger() {
	select {
	case c.trigger <- struct{}{}:
	default:
	}
}

// Run campaigns for leadership and leads while it holds the lock, until ctx is
// done; then it releases the lock (a successor takes over at once) and returns
// nil. Losing the lock (session invalidated, Consul unreachable past the TTL)
// stops all writing at once and goes back to campaigning.
func (c *Controller) Run(ctx context.Context) error {
	delay := c.cfg.RetryMin
	for ctx.Err() == nil {
		err := c.campaign(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			c.cfg.Logger.Warn("placement: leadership attempt failed", "id", c.cfg.ID, "err", err, "retry_in", delay)
			if !sleepCtx(ctx, delay) {
				return nil
			}
			delay = min(delay*2, c.cfg.RetryMax)
			continue
		}
		delay = c.cfg.RetryMin
	}
	return nil
}

// campaign acquires the lock, leads until it is lost or ctx is done, and cleans up.
func (c *Controller) campaign(ctx context.Context) error {
	ttl := c.cfg.SessionTTL.String()
	sid, _, err := c.client.Session().Create(&api.SessionEntry{
		Name: "tfgate-placement " + c.cfg.ID, TTL: ttl, LockDelay: c.cfg.LockDelay,
		Behavior: api.SessionBehaviorRelease,
	}, (&api.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("create session: %w", err)
	}
	renewDone := make(chan struct{})
	renewExit := make(chan struct{})
	go func() {
		defer close(renewExit)
		_ = c.client.Session().RenewPeriodic(ttl, sid, nil, renewDone)
	}()
	// Closing renewDone destroys the session, which releases the lock if held.
	endSession := func() { close(renewDone); <-renewExit }

	lock, err := c.client.LockOpts(&api.LockOptions{
		Key: c.store.LockKey(), Value: []byte(c.cfg.ID), Session: sid,
		MonitorRetries: 3, MonitorRetryTime: time.Second, LockWaitTime: c.cfg.LockWait,
	})
	if err != nil {
		endSession()
		return err
	}
	lost, err := lock.Lock(ctx.Done())
	if err != nil || lost == nil {
		endSession()
		if err != nil {
			return fmt.Errorf("acquire %s: %w", c.store.LockKey(), err)
		}
		return nil // ctx done
	}

	leadCtx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-lost:
			cancel() // stop writing now
		case <-leadCtx.Done():
		}
	}()
	c.session.Store(sid)
	c.leader.Store(true)
	c.cfg.Logger.Info("placement: leading", "id", c.cfg.ID, "session", sid)
	err = c.lead(leadCtx, sid)
	c.leader.Store(false)
	c.session.Store("")
	cancel()
	if ctx.Err() == nil {
		c.cfg.Logger.Warn("placement: leadership lost; stopped writing", "id", c.cfg.ID, "err", err)
	}
	// Release at once so a successor need not wait for the TTL, end the session,
	// and wait for the lock monitor to see it.
	_ = lock.Unlock()
	endSession()
	<-lost
	return nil
}

// lead runs decisions until ctx is done (leadership lost or shutdown).
func (c *Controller) lead(ctx context.Context, session string) error {
	// A demand report decides at once.
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		first := true
		_ = c.store.watch(ctx, c.store.cfg.Prefix+"/demand/", func(api.KVPairs, uint64) bool {
			if !first {
				c.Trigger()
			}
			first = false
			return true
		})
	}()
	defer func() { <-watchDone }()

	var st *Stored
	var problemsSum uint64 // of the problems last logged at Warn
	var rest time.Time     // triggered decisions wait until then (duty cycle)
	delay := c.cfg.RetryMin
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		case <-c.trigger:
			// A decision is over the whole catalog (~0.15 s at 50,000 versions
			// on a 2-core machine, more under load), and demand reports can
			// trigger one every 250 ms per gateway: deciding back to back would
			// take a core from the gateway the leader runs in. After a decision
			// of duration d the next triggered one waits d (at most half of a
			// core); the reports meanwhile coalesce into it.
			if sleepUntil(ctx, rest) != nil {
				return ctx.Err()
			}
		}
		if st == nil {
			// Continue from KV: the previous leader's assignment is the input.
			s, err := c.store.ReadState(ctx)
			if err != nil {
				c.retry(ctx, timer, &delay, "read placement", err)
				continue
			}
			for h, err := range s.Broken {
				c.cfg.Logger.Warn("placement: host assignment unreadable; it will be rewritten", "host", h, "err", err)
			}
			st = s
		}
		start := time.Now()
		d, res, err := c.decideOnce(ctx, session, st)
		rest = time.Now().Add(time.Since(start))
		c.metrics.record(ctx, start, d, res, err)
		if err != nil {
			if errors.Is(err, ErrConflict) {
				st = nil // someone wrote since we read: re-read (and if we are deposed, ctx ends)
			}
			c.retry(ctx, timer, &delay, "decide", err)
			continue
		}
		delay = c.cfg.RetryMin
		c.last.Store(d)
		c.mu.Lock()
		c.written++
		c.mu.Unlock()
		// Problems are logged when they change (and at each new term), not on
		// every decision: the same list every interval would bury everything else.
		ph := xxhash.New()
		for _, p := range d.Problems {
			_, _ = ph.WriteString(p.Message)
			_, _ = ph.Write([]byte{0})
		}
		newProblems := ph.Sum64() != problemsSum
		problemsSum = ph.Sum64()
		lvl := slog.LevelDebug
		if res.HostsWritten > 0 || (newProblems && len(d.Problems) > 0) {
			lvl = slog.LevelInfo
		}
		c.cfg.Logger.Log(ctx, lvl, "placement: decided", "hosts_written", res.HostsWritten, "kv_bytes", res.Bytes,
			"versions", d.Stats.Versions, "placed", d.Stats.Placed, "added", d.Stats.Added, "removed", d.Stats.Removed,
			"moved", d.Stats.Moved, "evicted", d.Stats.Evicted, "pending", d.Stats.Pending,
			"pending_required", d.Stats.PendingRequired, "problems", len(d.Problems))
		plvl := slog.LevelWarn
		if !newProblems {
			plvl = slog.LevelDebug
		}
		for i, p := range d.Problems {
			if i == 20 {
				c.cfg.Logger.Log(ctx, plvl, "placement: more problems not logged", "count", len(d.Problems)-i)
				break
			}
			c.cfg.Logger.Log(ctx, plvl, "placement: "+p.Message, "kind", p.Kind.String())
		}
		timer.Reset(c.cfg.Interval)
	}
}

func (c *Controller) retry(ctx context.Context, timer *time.Timer, delay *time.Duration, what string, err error) {
	if ctx.Err() != nil {
		return
	}
	c.mu.Lock()
	c.failed++
	c.mu.Unlock()
	c.cfg.Logger.Warn("placement: "+what+" failed", "err", err, "retry_in", *delay)
	timer.Reset(*delay)
	*delay = min(*delay*2, c.cfg.RetryMax)
}

// decideOnce reads the inputs, decides from st's assignment and writes the result.
func (c *Controller) decideOnce(ctx context.Context, session string, st *Stored) (*Decision, WriteResult, error) {
	hosts, err := c.cfg.Hosts(ctx)
	if err != nil {
		return nil, WriteResult{}, fmt.Errorf("hosts: %w", err)
	}
	catalog, err := c.cfg.Catalog(ctx)
	if err != nil {
		return nil, WriteResult{}, fmt.Errorf("catalog: %w", err)
	}
	// Nothing is unloaded for lack of an answer: an empty host list or catalog
	// while something is placed is a glitch upstream, not a fleet to empty.
	if placed := st.Assignment.count(); placed > 0 && (len(hosts) == 0 || len(catalog) == 0) {
		return nil, WriteResult{}, fmt.Errorf("%w: %d hosts and %d catalog versions while %d copies are placed; keeping the placement", ErrEmptyInput, len(hosts), len(catalog), placed)
	}
	reports, err := c.store.ReadReports(ctx)
	if err != nil {
		return nil, WriteResult{}, err
	}
	now := c.cfg.Now()
	resident, failures := reports.Inputs(now.Add(-c.cfg.ReportTTL))
	if c.cfg.RequireStatus {
		for i := range hosts {
			if st, ok := reports.Status[hosts[i].ID]; !ok || st.Updated.Before(now.Add(-c.cfg.ReportTTL)) {
				hosts[i].Frozen = true
			}
		}
	}
	prev := st.Assignment
	in := Input{Now: now, Config: c.cfg.Policy, Hosts: hosts, Catalog: catalog, Resident: resident,
		Failures: failures, Demand: MergeDemand(reports.Demand, now.Add(-c.cfg.ReportTTL)), Previous: &prev}
	if c.cfg.LocalDemand != nil {
		for k, l := range c.cfg.LocalDemand() {
			d := in.Demand[k]
			d.Rate = max(d.Rate, l.Rate)
			if l.LastUsed.After(d.LastUsed) {
				d.LastUsed = l.LastUsed
			}
			in.Demand[k] = d
		}
	}
	if c.cfg.Routing != nil {
		in.Required, in.ModelPools = c.cfg.Routing()
	}
	d, err := Decide(in)
	if err != nil {
		return nil, WriteResult{}, err
	}
	if ctx.Err() != nil {
		return nil, WriteResult{}, ctx.Err()
	}
	res, err := c.store.WriteAssignment(ctx, session, d.Assignment, st)
	if err != nil {
		return d, res, err
	}
	if err := c.clearDeparted(ctx, session, d, st); err != nil {
		return d, res, err
	}
	// The report is rewritten only when what it says changes.
	rep := NewReport(d, c.cfg.ID, now)
	sum, _ := json.Marshal(Report{Stats: rep.Stats, Problems: rep.Problems, Versions: rep.Versions, Truncated: rep.Truncated})
	if h := xxhash.Sum64(sum); h != c.reportSum || res.HostsWritten > 0 {
		if err := c.store.WriteReport(ctx, session, rep); err != nil {
			c.cfg.Logger.Warn("placement: report not written", "err", err)
		} else {
			c.reportSum = h
		}
	}
	return d, res, nil
}

// clearDeparted deletes the KV value of every host the decision assigns nothing
// because it left the host list (deregistered, failing its health check) or has
// no capacity, once d has placed its versions elsewhere: readers (ListPlacement,
// the gateways' cold-start messages) stop naming it, it is not fed to Decide
// again as previous copies (counted as removed on every decision), and a host
// that comes back gets a fresh assignment instead of reloading its stale one.
// Clearing unloads nothing: a sidecar still watching keeps what it has until it
// is assigned something again. A host whose versions are still waiting for room
// keeps its value (it is what keeps them considered, and reported) until they
// are placed.
func (c *Controller) clearDeparted(ctx context.Context, session string, d *Decision, st *Stored) error {
	var gone []string
	for id, ha := range st.Assignment.Hosts {
		if _, ok := d.Assignment.Hosts[id]; !ok && rePlaced(d, ha.Entries) {
			gone = append(gone, id)
		}
	}
	for id := range st.Broken {
		if _, ok := d.Assignment.Hosts[id]; !ok {
			gone = append(gone, id) // unreadable and gone: nothing to re-place from it
		}
	}
	slices.Sort(gone)
	for _, id := range gone {
		n := len(st.Assignment.Hosts[id].Entries)
		if err := c.store.ClearHost(ctx, session, id, st); err != nil {
			if errors.Is(err, ErrConflict) || ctx.Err() != nil {
				return err
			}
			c.cfg.Logger.Warn("placement: clearing a departed host's assignment failed; retrying on the next decision", "host", id, "err", err)
			continue
		}
		c.cfg.Logger.Info("placement: cleared the assignment of a host that left (or has no capacity); its versions are placed elsewhere",
			"host", id, "versions", n)
	}
	return nil
}

// rePlaced says whether every version of a departed host's entries that d
// considered has a copy in d: only then may its value stop being an input (a
// version still waiting for room stays considered, and reported, through it).
func rePlaced(d *Decision, entries []Entry) bool {
	for _, e := range entries {
		i, found := slices.BinarySearchFunc(d.Versions, e.Key, func(v VersionState, k Key) int {
			return cmp.Or(cmp.Compare(v.Model, k.Model), cmp.Compare(v.Version, k.Version))
		})
		if found && len(d.Versions[i].Hosts) == 0 {
			return false
		}
	}
	return true
}

func (a *Assignment) count() int {
	n := 0
	for _, ha := range a.Hosts {
		n += len(ha.Entries)
	}
	return n
}

// HostService selects one pool's hosts in the Consul catalog.
type HostService struct {
	// Pool is the pool these hosts form.
	Pool string
	// Service and Tag select passing instances (Tag optional).
	Service, Tag string
}

// Service meta keys a serving host registers.
const (
	// MetaCapacityBytes is the memory, in bytes, the host gives to models.
	MetaCapacityBytes = "tfgate_capacity_bytes"
	// MetaWeight optionally overrides the host's rendezvous weight.
	MetaWeight = "tfgate_weight"
)

// ConsulHosts lists passing instances of each HostService as hosts: ID is the
// Consul service ID (the same ID a sidecar watches its assignment under),
// capacity from MetaCapacityBytes (missing or bad: 0, which Decide reports).
func ConsulHosts(client *api.Client, services []HostService) func(ctx context.Context) ([]Host, error) {
	return func(ctx context.Context) ([]Host, error) {
		var hosts []Host
		for _, hs := range services {
			entries, _, err := client.Health().Service(hs.Service, hs.Tag, true, (&api.QueryOptions{}).WithContext(ctx))
			if err != nil {
				return nil, fmt.Errorf("placement: list %s hosts: %w", hs.Service, err)
			}
			hosts = append(hosts, HostsFromEntries(hs.Pool, entries)...)
		}
		return hosts, nil
	}
}

// HostsFromEntries converts Consul service entries to hosts of one pool.
func HostsFromEntries(pool string, entries []*api.ServiceEntry) []Host {
	hosts := make([]Host, 0, len(entries))
	for _, e := range entries {
		if e.Service == nil {
			continue
		}
		h := Host{ID: e.Service.ID, Pool: pool}
		if v, err := strconv.ParseInt(e.Service.Meta[MetaCapacityBytes], 10, 64); err == nil {
			h.CapacityBytes = v
		}
		if v, err := strconv.ParseFloat(e.Service.Meta[MetaWeight], 64); err == nil && v > 0 {
			h.Weight = v
		}
		hosts = append(hosts, h)
	}
	return hosts
}

// sleepUntil waits until t (at once when t has passed), or for ctx.
func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}
