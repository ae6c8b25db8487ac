package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"slices"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/sync/errgroup"

	"github.com/tfgate/tfgate/gateway/route"
	"github.com/tfgate/tfgate/placement"
)

// PlacementConfig turns placement on (cmd/gateway --placement): the gateway runs a
// placement controller (one of any number; the one holding the Consul lock
// leads), reports its demand, follows the placement and holds requests for
// versions no host has until they load (coldstart.go). The policy, the pins and
// the cold-start bounds are the routing config's placement: section; the pools
// are its backends' Consul pools.
type PlacementConfig struct {
	// ID names this gateway in the leader lock and its demand key. Default: the
	// hostname and the process ID.
	ID string
	// Store is where placement lives in Consul KV (Prefix default "tfgate").
	Store placement.StoreConfig
	// Interval, SessionTTL: the controller's (defaults 10s, 10s).
	Interval, SessionTTL time.Duration
	// RequireStatus: see placement.ControllerConfig. Default false.
	RequireStatus bool
	// Client is the Consul client. Default: from the backends: section's consul:.
	Client *api.Client
}

// placementState is what a gateway knows of the placement: where each version is
// assigned (the leader's KV state) and what the leader reported.
type placementState struct {
	where  map[placement.Key][]placedCopy
	report map[placement.Key]placement.VersionState
}

type placedCopy struct {
	host     string
	since    time.Time
	draining bool
}

// placer is the gateway's part of placement: the controller, the demand
// reports, and the watches the cold-start path reads.
type placer struct {
	id         string
	client     *api.Client
	ctl        *placement.Controller
	store      *placement.Store
	demand     *demand
	log        *slog.Logger
	state      atomic.Pointer[placementState]
	changed    signal // the state or the report changed
	cfg        func() *route.Config
	warnedHash atomic.Uint64 // config hash last warned about (warnPolicyChange)
	// assigned, when set, is told of every version the placement assigns
	// (Backends.Want): readiness then looks for it on every poll round until a
	// host reports it AVAILABLE, so a placed version becomes routable within a
	// round of its load finishing, not at the budgeted resync.
	assigned func(model string, v int64)
	// routeOnly, when set, is given every assignment (host ID -> model ->
	// versions, draining copies included; hosts.Manager.SetPlacement): the
	// request path then stops routing a version to a host the moment the
	// assignment takes it off that host, before the host's sidecar unloads it.
	routeOnly func(map[string]map[string][]int64)
}

// newPlacer builds the controller from the first routing config; cfg returns the
// config now serving (the requirements follow reloads; the policy is read at start).
func newPlacer(pc PlacementConfig, first *route.Config, cfg func() *route.Config, log *slog.Logger, mp metric.MeterProvider) (*placer, error) {
	if pc.ID == "" {
		h, _ := os.Hostname()
		pc.ID = fmt.Sprintf("%s-%d", h, os.Getpid())
	}
	client := pc.Client
	if client == nil {
		c, err := first.Hosts.Consul.NewClient()
		if err != nil {
			return nil, fmt.Errorf("gateway: placement: consul client: %w", err)
		}
		client = c
	}
	var services []placement.HostService
	for _, name := range slices.Sorted(mapsKeys(first.Hosts.Pools)) {
		p := first.Hosts.Pools[name]
		if p.Consul == nil {
			log.Warn("gateway: placement: pool is static; its hosts have no capacity meta or service ID and take no placed models", "pool", name)
			continue
		}
		services = append(services, placement.HostService{Pool: name, Service: p.Consul.Service, Tag: p.Consul.Tag})
	}
	if len(services) == 0 {
		return nil, errors.New("gateway: placement needs at least one consul pool in backends: (static pools cannot be placed on)")
	}
	pl := &placer{id: pc.ID, client: client, demand: newDemand(nil), log: log, cfg: cfg}
	pl.state.Store(&placementState{})
	policy := first.Placement.Policy()
	ctl, err := placement.NewController(client, placement.ControllerConfig{
		ID:     pc.ID,
		Policy: policy,
		Store:  pc.Store,
		Hosts:  placement.ConsulHosts(client, services),
		Routing: func() ([]placement.Requirement, map[string]string) {
			c := cfg()
			pl.warnPolicyChange(c, policy)
			return c.Requirements()
		},
		LocalDemand:   pl.demand.unreported,
		Interval:      pc.Interval,
		SessionTTL:    pc.SessionTTL,
		RequireStatus: pc.RequireStatus,
		Logger:        log,
		MeterProvider: mp,
	})
	if err != nil {
		return nil, fmt.Errorf("gateway: placement: %w", err)
	}
	pl.ctl, pl.store = ctl, ctl.Store()
	return pl, nil
}

func mapsKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// run runs the controller, the demand reports and the watches until ctx is
// done; the controller releases the lock on the way out.
func (p *placer) run(ctx context.Context) error {
	var g errgroup.Group
	g.Go(func() error { return p.ctl.Run(ctx) })
	g.Go(func() error {
		c := p.cfg().Placement
		p.demand.run(ctx, p.id, c.DemandInterval, route.MinDemandInterval, p.store.PutDemand, p.log)
		return nil
	})
	g.Go(func() error { return p.watchState(ctx) })
	g.Go(func() error { p.watchReport(ctx); return nil })
	return g.Wait()
}

func (p *placer) watchState(ctx context.Context) error {
	updates := make(chan *placement.Stored)
	var g errgroup.Group
	g.Go(func() error { return p.store.WatchState(ctx, updates) })
	for {
		select {
		case <-ctx.Done():
			return g.Wait()
		case st := <-updates:
			where := map[placement.Key][]placedCopy{}
			old := p.state.Load()
			for host, ha := range st.Assignment.Hosts {
				for _, e := range ha.Entries {
					where[e.Key] = append(where[e.Key], placedCopy{host: host, since: e.Since, draining: e.Draining})
				}
			}
			// A host whose value is torn keeps its last good view.
			for host := range st.Broken {
				for k, cs := range old.where {
					for _, c := range cs {
						if c.host == host {
							where[k] = append(where[k], c)
						}
					}
				}
			}
			if p.routeOnly != nil {
				p.routeOnly(routedOnly(st, where))
			}
			p.state.Store(&placementState{where: where, report: old.report})
			p.changed.notify()
			if p.assigned != nil {
				for k := range where {
					p.assigned(k.Model, k.Version)
				}
			}
		}
	}
}

// routedOnly is what each host of the assignment may be routed: its entries
// (draining ones too: a make-before-break copy serves until the controller drops
// it), and for a host whose value is torn, its last good view (in where).
func routedOnly(st *placement.Stored, where map[placement.Key][]placedCopy) map[string]map[string][]int64 {
	out := make(map[string]map[string][]int64, len(st.Assignment.Hosts)+len(st.Broken))
	for host := range st.Assignment.Hosts {
		out[host] = map[string][]int64{}
	}
	for host := range st.Broken {
		out[host] = map[string][]int64{}
	}
	for k, cs := range where {
		for _, c := range cs {
			if m := out[c.host]; m != nil {
				m[k.Model] = append(m[k.Model], k.Version)
			}
		}
	}
	return out
}

// watchReport follows the leader's report with a blocking query.
func (p *placer) watchReport(ctx context.Context) {
	var index uint64
	delay := 200 * time.Millisecond
	for ctx.Err() == nil {
		kv, meta, err := p.client.KV().Get(p.store.ReportKey(), (&api.QueryOptions{WaitIndex: index, WaitTime: 30 * time.Second}).WithContext(ctx))
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			delay = min(delay*2, 10*time.Second)
			index = 0
			continue
		}
		delay = 200 * time.Millisecond
		if meta.LastIndex < index {
			index = 0
			continue
		}
		if meta.LastIndex == index {
			continue
		}
		index = meta.LastIndex
		if kv == nil {
			continue
		}
		r, err := p.store.ReadReport(ctx) // decodes; a second read is cheap and keeps decoding in one place
		if err != nil {
			continue
		}
		byKey := make(map[placement.Key]placement.VersionState, len(r.Versions))
		for _, v := range r.Versions {
			byKey[v.Key] = v
		}
		old := p.state.Load()
		p.state.Store(&placementState{where: old.where, report: byKey})
		p.changed.notify()
	}
}

// placed says where k is assigned and since when (the earliest copy).
func (p *placer) placed(k placement.Key) (hosts []string, since time.Time) {
	for _, c := range p.state.Load().where[k] {
		hosts = append(hosts, c.host)
		if since.IsZero() || c.since.Before(since) {
			since = c.since
		}
	}
	slices.Sort(hosts)
	return hosts, since
}

// unplaceable says why k can never be placed, from this gateway's own decision
// when it leads, else from the leader's report.
func (p *placer) unplaceable(k placement.Key) (string, bool) {
	if p.ctl.IsLeader() {
		if d := p.ctl.Last(); d != nil {
			if e, ok := d.Explain(k); ok {
				return e.Why, e.State == placement.Unplaceable
			}
		}
	}
	if v, ok := p.state.Load().report[k]; ok && v.State == placement.Unplaceable {
		return v.Why, true
	}
	return "", false
}

// want asks for k to be placed now: a demand report at once (the leader decides
// on every report) and, when this gateway leads, a decision.
func (p *placer) want(k placement.Key) {
	p.demand.kick()
	p.ctl.Trigger()
}

// signal is a broadcast: wait returns a channel closed at the next notify.
type signal struct {
	ch atomic.Pointer[chan struct{}]
}

func (s *signal) wait() <-chan struct{} {
	for {
		if p := s.ch.Load(); p != nil {
			return *p
		}
		ch := make(chan struct{})
		if s.ch.CompareAndSwap(nil, &ch) {
			return ch
		}
	}
}

func (s *signal) notify() {
	if p := s.ch.Swap(nil); p != nil {
		close(*p)
	}
}

// startPlacement starts placement for srv (before it serves) in workers, until
// bg is done. When ctx (Run's) is done, shutdown has begun: requests held for
// loads are answered UNAVAILABLE so that the graceful stop does not wait for them.
func startPlacement(ctx context.Context, pc PlacementConfig, first *route.Config, srv *Server, routeOnly func(map[string]map[string][]int64), workers *errgroup.Group, bg context.Context, log *slog.Logger, mp metric.MeterProvider) error {
	pl, err := newPlacer(pc, first, func() *route.Config { return srv.builder.current().routes.Config }, log, mp)
	if err != nil {
		return err
	}
	cm, err := newColdMetrics(mp)
	if err != nil {
		return fmt.Errorf("gateway: placement metrics: %w", err)
	}
	pl.demand.metrics = cm
	pl.assigned = srv.opts.Backends.Want
	pl.routeOnly = routeOnly
	srv.cold = newColdStart(srv, pl, pl.changed.wait, pl.demand)
	srv.cold.metrics = cm
	srv.placer = pl
	workers.Go(func() error { return pl.run(bg) })
	workers.Go(func() error {
		select {
		case <-ctx.Done():
		case <-bg.Done():
		}
		srv.cold.stop()
		return nil
	})
	log.Info("gateway: placement on", "id", pl.id, "prefix", pc.Store.Prefix)
	return nil
}

// warnPolicyChange logs, once per config, that a reload changed the placement
// policy: the controller decides with the policy it started with (pins and
// routing requirements follow reloads; the policy needs a restart).
func (p *placer) warnPolicyChange(c *route.Config, started placement.Config) {
	if p.warnedHash.Load() == c.Hash || reflect.DeepEqual(c.Placement.Policy(), started) {
		return
	}
	p.warnedHash.Store(c.Hash)
	p.log.Warn("gateway: the routing config's placement policy changed; restart the gateway to apply it (pins and routed versions are applied now)", "file", c.File)
}
