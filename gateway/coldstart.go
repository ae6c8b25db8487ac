package gateway

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tfgate/tfgate/gateway/hosts"
	"github.com/tfgate/tfgate/gateway/route"
	"github.com/tfgate/tfgate/placement"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// Cold start: with placement on, a request for a version that exists (its
// version directory or spec is in the spec store) but that no host reports
// AVAILABLE is held here, instead of failing, until a host does.
//
//   - The version's demand is recorded and written at once (coalesced): the
//     leader decides on every demand report (its decisions at most half the
//     time: placement.Controller), so the version is placed without
//     waiting for the controller's interval; readiness is asked to look for it
//     (Backends.Want).
//   - The request waits for the builder to publish a snapshot in which a host
//     reports the version AVAILABLE (and, for typed instances, its spec passed
//     the signature check): woken by every snapshot the builder publishes, which
//     follows the hosts manager's readiness changes; no polling here.
//   - It waits at most placement.cold_start.max_wait and at most the caller's
//     deadline minus cold_start.deadline_margin; then UNAVAILABLE
//     ([ErrColdStart]) naming where the version is being loaded and for how long,
//     with a grpc-retry-pushback-ms trailer.
//   - At most cold_start.max_queue requests wait per model; more are
//     RESOURCE_EXHAUSTED ([ErrColdQueueFull]). A version placement reports it
//     can never place fails at once with FAILED_PRECONDITION ([ErrUnplaceable]).
//   - However many requests wait for a version, it is loaded once: the gateway
//     only reports demand; the one leader places the version once (min_copies).
//
// A request whose backend call fails because the hosts that had its version
// went away (the host died or left under it, or unloaded the version as it was
// evicted; see [coldStart.lost]) is held the
// same way, not failed: it waits for a host other than the one that failed to
// report the version AVAILABLE (placement moves it there), then is sent once
// more. It is sent at most twice in all.
//
// Invariant: a held request goes on only once a host reports the version
// AVAILABLE; it is then served by the ordinary path, which sends it only to such
// a host (invariant 2), so no request reaches a host without the version.

// Sentinel errors of the cold-start path (mapped in errors.go).
var (
	// ErrColdStart: the version is being loaded and was not ready in time.
	ErrColdStart = errors.New("model version is being loaded")
	// ErrColdQueueFull: too many requests already wait for this model's loads.
	ErrColdQueueFull = errors.New("cold-start queue full")
	// ErrUnplaceable: placement cannot put the version on any host.
	ErrUnplaceable = errors.New("model version cannot be placed")
)

// ColdStartError is an [ErrColdStart] with what the caller needs to retry well.
type ColdStartError struct {
	Model   string
	Version int64
	// Hosts the version is assigned to (empty: not placed yet).
	Hosts []string
	// Loading is how long the version has been assigned (or, unassigned, since
	// the first request for it asked for it).
	Loading time.Duration
	// Waited is how long this request waited.
	Waited time.Duration
	// RetryAfter is the pushback sent in grpc-retry-pushback-ms.
	RetryAfter time.Duration
}

func (e *ColdStartError) Error() string {
	var where string
	if len(e.Hosts) > 0 {
		where = fmt.Sprintf("it is being loaded on %s (placed %v ago)", strings.Join(e.Hosts, ", "), e.Loading.Round(time.Millisecond))
	} else {
		where = fmt.Sprintf("it is waiting to be placed on a host (requested %v ago)", e.Loading.Round(time.Millisecond))
	}
	return fmt.Sprintf("model %q version %d: %v: %s; this request waited %v; retry in %v",
		e.Model, e.Version, ErrColdStart, where, e.Waited.Round(time.Millisecond), e.RetryAfter)
}

func (e *ColdStartError) Unwrap() error { return ErrColdStart }

// placementView is what the cold-start path reads of placement (a *placer).
type placementView interface {
	placed(k placement.Key) (hosts []string, since time.Time)
	unplaceable(k placement.Key) (why string, ok bool)
	want(k placement.Key)
}

// coldStart holds requests for versions no host has.
type coldStart struct {
	s      *Server
	view   placementView
	viewCh func() <-chan struct{} // closed when the view changes (nil: never)
	// readyCh is closed when the backends' routing view changes (nil: the
	// Backends cannot say; the published snapshot still wakes waiters). Raw
	// requests need nothing else: waiting for the next snapshot too added its
	// throttled rebuild (hundreds of ms at 50,000 models) to every cold start.
	readyCh func() <-chan struct{}
	demand  *demand
	now     func() time.Time

	mu      sync.Mutex
	waiting map[string]int     // model -> requests waiting
	waitKey map[vkey]int       // version -> requests waiting
	first   map[vkey]time.Time // version -> when the first request now waiting arrived

	// started, served and timedOut count requests that waited, that were
	// served after waiting, and that timed out waiting.
	started, served, timedOut atomic.Uint64
	// lostHost counts requests held again after their host went away.
	lostHost atomic.Uint64
	metrics  *coldMetrics // nil: none

	// stopping is closed when the gateway starts shutting down: held requests
	// are answered UNAVAILABLE at once (retry on another instance) instead of
	// holding the graceful stop for up to max_wait.
	stopping chan struct{}
	stopOnce sync.Once
}

func newColdStart(s *Server, view placementView, viewCh func() <-chan struct{}, d *demand) *coldStart {
	c := &coldStart{s: s, view: view, viewCh: viewCh, demand: d, now: time.Now, stopping: make(chan struct{}),
		waiting: map[string]int{}, waitKey: map[vkey]int{}, first: map[vkey]time.Time{}}
	if u, ok := s.opts.Backends.(interface{ Updated() <-chan struct{} }); ok {
		c.readyCh = u.Updated
	}
	return c
}

// admit is the request path's hook after route resolution: it records the
// demand for the resolved (or intended) version and, when no host has that
// version but it exists, waits for it and resolves again on the snapshot that
// has it. Otherwise it returns its arguments unchanged.
func (c *coldStart) admit(ctx context.Context, snap *snapshot, req *tfgatev1.PredictRequest, rt route.Route, m *route.ModelRoutes, err error) (*snapshot, route.Route, *route.ModelRoutes, error) {
	if m == nil {
		return snap, rt, m, err
	}
	v := rt.Version
	if err != nil {
		if !errors.Is(err, route.ErrNotRoutable) {
			return snap, rt, m, err
		}
		if v = intendedVersion(m, target(req)); v == 0 {
			return snap, rt, m, err
		}
	}
	c.demand.record(m.Name, v)
	typed := len(req.GetInstances()) > 0
	if c.ready(snap, m, v, typed) || !c.exists(m.Name, v) {
		return snap, rt, m, err
	}
	if werr := c.wait(ctx, m, v, typed, ""); werr != nil {
		return snap, rt, m, werr
	}
	snap = c.s.builder.current()
	rt, m2, err := snap.routes.Resolve(req.GetModel(), target(req), req.GetRoutingKey())
	return snap, rt, m2, err
}

// intendedVersion is the version a label or default target names when it is not
// routable (0 when it cannot be told: an experiment with no routable arm).
func intendedVersion(m *route.ModelRoutes, t route.Target) int64 {
	if t.Label != "" {
		return m.Labels[t.Label]
	}
	if v, err := strconv.ParseInt(m.Default, 10, 64); err == nil {
		return v
	}
	return m.Labels[m.Default]
}

// exists: the version is one the gateway knows (a version directory or spec).
func (c *coldStart) exists(model string, v int64) bool {
	if c.s.opts.Specs.Err(model, v) == nil {
		return true
	}
	return slices.Contains(c.s.opts.Specs.Versions(model), v)
}

// ready: a host reports the version AVAILABLE and, for typed instances, its spec
// check finished (passed, or failed: then the ordinary path says why).
func (c *coldStart) ready(snap *snapshot, m *route.ModelRoutes, v int64, typed bool) bool {
	return c.readyExcept(snap, m, v, typed, "")
}

// readyExcept is ready counting no host named except (a host that just failed).
func (c *coldStart) readyExcept(snap *snapshot, m *route.ModelRoutes, v int64, typed bool, except string) bool {
	avail := c.s.opts.Backends.AvailableHosts(m.Name, v, m.Pools)
	if len(avail) == 0 || (except != "" && len(avail) == 1 && avail[0] == except) {
		return false
	}
	k := vkey{m.Name, v}
	if !typed || snap.pipes[k] != nil {
		return true
	}
	if c.s.opts.Specs.Err(m.Name, v) != nil {
		return true // no spec: the ordinary path says so
	}
	return c.s.builder.sig.lastErr(k) != nil
}

// lost reports whether a backend call failed because the hosts that had the
// version went away under it, and which host failed ("" when none was reached):
// every host with it gone from readiness (hosts.ErrVersionUnavailable) or
// ejected (hosts.ErrNoHost), a host's connection failing (UNAVAILABLE, or
// CANCELED as discovery closed it), or a host no longer having it (NOT_FOUND),
// with no other to retry on. Not when the caller's context ended.
func (c *coldStart) lost(ctx context.Context, err error) (host string, ok bool) {
	if ctx.Err() != nil {
		return "", false
	}
	if errors.Is(err, hosts.ErrVersionUnavailable) || errors.Is(err, hosts.ErrNoHost) {
		return "", true
	}
	var he *hosts.HostError
	if errors.As(err, &he) {
		// UNAVAILABLE: the host's transport failed; CANCELED with the caller's
		// context alive: discovery closed the connection as the host left;
		// NOT_FOUND ("Servable not found"): the host unloaded the version (an
		// eviction) before readiness saw it go.
		if c := status.Code(he.Err); c == codes.Unavailable || c == codes.Canceled || c == codes.NotFound {
			return he.Addr, true
		}
	}
	return "", false
}

// rewait holds a request whose backend call failed with [coldStart.lost] until
// a host other than failed has the version again, or failed itself does once
// readiness has stopped listing it there and a later poll lists it again (the
// host reloaded the version it had unloaded: often the only host placed), or
// fails it as wait does.
func (c *coldStart) rewait(ctx context.Context, m *route.ModelRoutes, v int64, typed bool, failed string) error {
	c.lostHost.Add(1)
	return c.wait(ctx, m, v, typed, failed)
}

// wait holds the request until the version is ready on a host other than
// except (""; any host), or fails it.
func (c *coldStart) wait(ctx context.Context, m *route.ModelRoutes, v int64, typed bool, except string) error {
	cs := c.s.builder.current().routes.Config.Placement.ColdStart
	k, pk := vkey{m.Name, v}, placement.Key{Model: m.Name, Version: v}
	start := c.now()
	if why, ok := c.view.unplaceable(pk); ok {
		c.metrics.done(ctx, coldUnplaceable, 0)
		return fmt.Errorf("model %q version %d: %w: %s; no host can hold it, so requests for it cannot be served until that changes", m.Name, v, ErrUnplaceable, why)
	}
	limit := cs.MaxWait
	if dl, ok := ctx.Deadline(); ok {
		limit = min(limit, time.Until(dl)-cs.DeadlineMargin)
	}

	c.mu.Lock()
	if c.waiting[m.Name] >= cs.MaxQueue {
		c.mu.Unlock()
		c.metrics.done(ctx, coldQueueFull, 0)
		return fmt.Errorf("model %q version %d: %w: %d requests already wait for this model's versions to load (placement.cold_start.max_queue); retry later", m.Name, v, ErrColdQueueFull, cs.MaxQueue)
	}
	c.waiting[m.Name]++
	c.waitKey[k]++
	if _, ok := c.first[k]; !ok {
		c.first[k] = start
	}
	first := c.first[k]
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		if c.waiting[m.Name]--; c.waiting[m.Name] == 0 {
			delete(c.waiting, m.Name)
		}
		if c.waitKey[k]--; c.waitKey[k] == 0 {
			delete(c.waitKey, k)
			delete(c.first, k) // the maps hold only versions waited for now
		}
		c.mu.Unlock()
	}()
	c.started.Add(1)

	c.view.want(pk)
	c.s.opts.Backends.Want(m.Name, v)
	timer := time.NewTimer(max(limit, 0))
	defer timer.Stop()
	for {
		published := c.s.builder.pub.wait() // before the check: no wake is missed
		var viewCh, readyCh <-chan struct{}
		if c.viewCh != nil {
			viewCh = c.viewCh()
		}
		if c.readyCh != nil {
			readyCh = c.readyCh()
		}
		if except != "" && !slices.Contains(c.s.opts.Backends.AvailableHosts(m.Name, v, m.Pools), except) {
			// Readiness has caught up with the host that failed the call: if it
			// lists the version again later, a poll found it there (reloaded).
			except = ""
		}
		if c.readyExcept(c.s.builder.current(), m, v, typed, except) {
			c.metrics.done(ctx, coldServed, c.now().Sub(start).Seconds())
			c.served.Add(1)
			return nil
		}
		if why, ok := c.view.unplaceable(pk); ok {
			c.metrics.done(ctx, coldUnplaceable, c.now().Sub(start).Seconds())
			return fmt.Errorf("model %q version %d: %w: %s; no host can hold it, so requests for it cannot be served until that changes", m.Name, v, ErrUnplaceable, why)
		}
		if limit <= 0 {
			return c.timeout(ctx, m.Name, v, pk, first, start, cs.Pushback)
		}
		select {
		case <-published:
		case <-viewCh:
		case <-readyCh:
		case <-timer.C:
			return c.timeout(ctx, m.Name, v, pk, first, start, cs.Pushback)
		case <-ctx.Done():
			c.metrics.done(ctx, coldCanceled, c.now().Sub(start).Seconds())
			return ctx.Err()
		case <-c.stopping:
			c.metrics.done(ctx, coldCanceled, c.now().Sub(start).Seconds())
			return fmt.Errorf("model %q version %d: %w while the request waited for the version to load; retry on another gateway instance", m.Name, v, ErrShuttingDown)
		}
	}
}

func (c *coldStart) timeout(ctx context.Context, model string, v int64, pk placement.Key, first, start time.Time, pushback time.Duration) error {
	c.timedOut.Add(1)
	now := c.now()
	c.metrics.done(ctx, coldTimeout, now.Sub(start).Seconds())
	e := &ColdStartError{Model: model, Version: v, Waited: now.Sub(start), Loading: now.Sub(first), RetryAfter: pushback}
	hosts, since := c.view.placed(pk)
	if len(hosts) > 0 {
		e.Hosts = hosts
		// Since has second precision on the wire: trust it only when clearly earlier.
		if !since.IsZero() && since.Before(first.Add(-time.Second)) {
			e.Loading = now.Sub(since)
		}
	}
	// The trailer tells well-behaved clients (gRPC retry policy) when to retry.
	_ = grpc.SetTrailer(ctx, metadata.Pairs("grpc-retry-pushback-ms", strconv.FormatInt(pushback.Milliseconds(), 10)))
	return e
}

// waitingNow is the number of requests held now, per version.
func (c *coldStart) waitingNow() map[vkey]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[vkey]int, len(c.waitKey))
	for k, n := range c.waitKey {
		out[k] = n
	}
	return out
}

// stop answers every held request (and every later one that would be held)
// UNAVAILABLE: the gateway is shutting down.
func (c *coldStart) stop() { c.stopOnce.Do(func() { close(c.stopping) }) }
