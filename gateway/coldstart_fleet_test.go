package gateway

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tfgate/tfgate/internal/testwait"
	"github.com/tfgate/tfgate/placement"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

// Customer models of the fleet tests: one version each, ~0.5s to load.
const coldCustBytes = 512 << 10

// TestColdStartEvictedComesBack: a host with room for the default version and
// two customer models; traffic to two other models evicts model X (least
// recently used, past its min residency); a later burst of requests for X waits
// as a cold start and is served once X is loaded again, with exactly one more
// load of X.
func TestColdStartEvictedComesBack(t *testing.T) {
	capacity := int64(coldSmallBytes + 2*coldCustBytes + 64<<10)
	e := startColdEnvWith(t, coldEnvConfig{
		coldStart: "{max_wait: 20s}",
		policy:    "{min_residency: 1s}",
		capacity:  capacity,
		memory:    capacity + coldCustBytes, // one eviction's unload may overlap the load that replaces it
		models:    map[string]int64{"cust-a": coldCustBytes, "cust-b": coldCustBytes, "cust-c": coldCustBytes},
	})
	e.waitDefault()
	key := func(m string) placement.Key { return placement.Key{Model: m, Version: 1} }
	x := "cust-a"
	serve := func(name string) time.Duration {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
		defer cancel()
		start := time.Now()
		resp, err := e.predictModel(ctx, name, 1)
		if err != nil || resp.GetModel() != name || resp.GetVersion() != 1 {
			t.Fatalf("request for %s@1: %v, %v; want served by it", name, resp, err)
		}
		return time.Since(start)
	}
	resident := func(name string) bool {
		return len(e.guard.Backends.AvailableHosts(name, 1, []string{"main"})) > 0
	}

	// X is served (cold: one load), then the other models' traffic needs its room.
	first := serve(x)
	if got := e.loadsOfKey(key(x), ""); got != 1 {
		t.Fatalf("%s loaded %d times for its first request, want 1", x, got)
	}
	serve("cust-b") // fits beside X
	serve("cust-c") // does not: X, the least recently used, goes
	testwait.Until(t, x+" to be evicted (unassigned and AVAILABLE nowhere)", func() bool {
		hosts, _ := e.srv.placer.placed(key(x))
		return len(hosts) == 0 && !resident(x)
	})
	if d := e.srv.placer.ctl.Last(); d != nil {
		if ex, ok := d.Explain(key(x)); ok {
			t.Logf("after the eviction, the leader: %s", ex)
		}
	}

	// X comes back on demand: 20 concurrent requests, all held as cold starts and
	// served after one load.
	const n = 20
	startedBefore, servedBefore := e.srv.cold.started.Load(), e.srv.cold.served.Load()
	var wg sync.WaitGroup
	errs := make([]error, n)
	waits := make([]time.Duration, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
			defer cancel()
			start := time.Now()
			resp, err := e.predictModel(ctx, x, 1)
			waits[i] = time.Since(start)
			if err == nil && (resp.GetModel() != x || resp.GetVersion() != 1) {
				err = fmt.Errorf("served by %s@%d", resp.GetModel(), resp.GetVersion())
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("request %d for evicted %s: %v; want served after its load", i, x, err)
		}
	}
	if got := e.loadsOfKey(key(x), ""); got != 2 {
		t.Errorf("%s loaded %d times in all (first request, then back after eviction), want 2", x, got)
	}
	if held := e.srv.cold.started.Load() - startedBefore; held == 0 {
		t.Errorf("no request for evicted %s was held as a cold start", x)
	}
	if got := e.srv.cold.served.Load() - servedBefore; got != e.srv.cold.started.Load()-startedBefore {
		t.Errorf("%d requests held for %s, %d served after waiting; want all served", e.srv.cold.started.Load()-startedBefore, x, got)
	}
	// Room for X again came from cust-b, now the least recently used (its unload
	// may still be under way).
	testwait.Until(t, "cust-b, now the least recently used, to be evicted for "+x, func() bool {
		hosts, _ := e.srv.placer.placed(key("cust-b"))
		return len(hosts) == 0 && !resident("cust-b")
	})
	if !resident("cust-c") || !resident(x) {
		t.Errorf("resident after X came back: cust-a %v, cust-c %v; want both", resident(x), resident("cust-c"))
	}
	slices.Sort(waits)
	t.Logf("%s (simulated load %v): first request %v; back after eviction: %d requests, wait p50 %v, max %v; %d held in the cold path",
		x, coldLoadTime(coldCustBytes), first.Round(time.Millisecond), n, waits[n/2].Round(time.Millisecond), waits[n-1].Round(time.Millisecond),
		e.srv.cold.started.Load()-startedBefore)
	if e.guard.calls.Load() == 0 || e.guard.bad.Load() != 0 {
		t.Errorf("backend calls %d, to hosts without the version %d; want some calls, none without", e.guard.calls.Load(), e.guard.bad.Load())
	}
}

// TestColdStartHostKilled: two hosts, model X on one of them only. That host
// dies (its server and sidecar stop) and leaves Consul; with traffic running
// the whole time, the controller places X on the other host and requests
// resume without anyone acting. Requests caught by the death may fail
// UNAVAILABLE (the documented cold-start one, with its pushback, or the dead
// host's own); eventually every request succeeds, and no backend call ever
// goes to a host that did not report X AVAILABLE.
func TestColdStartHostKilled(t *testing.T) {
	e := startColdEnvWith(t, coldEnvConfig{
		coldStart: "{max_wait: 20s, pushback: 500ms}",
		hosts:     2,
		models:    map[string]int64{"cust-a": coldCustBytes},
	})
	e.waitDefault()
	const x = "cust-a"
	k := placement.Key{Model: x, Version: 1}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	if _, err := e.predictModel(ctx, x, 1); err != nil {
		t.Fatalf("first request for %s: %v", x, err)
	}
	cancel()
	hosts, _ := e.srv.placer.placed(k)
	if len(hosts) != 1 {
		t.Fatalf("%s is assigned to %v, want one host", x, hosts)
	}
	dead := e.host(hosts[0])
	var alive *coldHost
	for _, h := range e.hosts {
		if h != dead {
			alive = h
		}
	}

	// Traffic: 4 clients, each request with a 5s deadline, until told to stop.
	type result struct {
		err        error
		pushback   []string
		start, end time.Time
	}
	var (
		mu      sync.Mutex
		results []result
		streak  atomic.Int64 // successes since the last failure
		stop    = make(chan struct{})
		wg      sync.WaitGroup
	)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				var trailer metadata.MD
				_, err := e.predictModel(ctx, x, 1, grpc.Trailer(&trailer))
				cancel()
				if err != nil {
					streak.Store(0)
				} else {
					streak.Add(1)
				}
				mu.Lock()
				results = append(results, result{err, trailer.Get("grpc-retry-pushback-ms"), start, time.Now()})
				mu.Unlock()
			}
		}()
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	testwait.Until(t, "traffic to "+x+" to be served by "+dead.id, func() bool { return e.guard.servedBy(dead.addr, x, 1) >= 20 })

	heldBefore := e.srv.cold.started.Load()
	killed := time.Now()
	dead.kill()
	if err := e.cl.Agent().ServiceDeregister(dead.id); err != nil {
		t.Fatal(err)
	}
	gone := time.Now() // dead's server has stopped and it has left Consul
	// The leader's decision is the placement; the KV value of a host that left
	// is deleted once its versions have copies elsewhere (below).
	testwait.Until(t, "the leader to place "+x+" on "+alive.id, func() bool {
		d := e.srv.placer.ctl.Last()
		if d == nil {
			return false
		}
		ex, ok := d.Explain(k)
		return ok && slices.Equal(ex.Hosts, []string{alive.id})
	})
	testwait.Until(t, "100 requests in a row to succeed after the kill", func() bool {
		return e.guard.servedBy(alive.addr, x, 1) > 0 && streak.Load() >= 100
	})
	close(stop)
	wg.Wait()

	var ok, coldStart, hostDown int
	var firstOK time.Time
	for _, r := range results {
		switch {
		case r.err == nil:
			ok++
			if r.start.After(gone) && (firstOK.IsZero() || r.end.Before(firstOK)) {
				firstOK = r.end
			}
		case status.Code(r.err) == codes.Unavailable && strings.Contains(status.Convert(r.err).Message(), "is being loaded"):
			coldStart++
			if !slices.Equal(r.pushback, []string{"500"}) {
				t.Errorf("cold-start UNAVAILABLE with grpc-retry-pushback-ms %q, want [500]: %v", r.pushback, r.err)
			}
		case status.Code(r.err) == codes.Unavailable && r.end.After(killed):
			// A request caught by the kill is held until the model is placed
			// elsewhere (or answered as a cold start), never failed plainly.
			hostDown++
			t.Errorf("request caught by the kill failed without being held: %v", r.err)
		default:
			t.Errorf("request for %s (at %v from the kill): %v; want success or UNAVAILABLE", x, r.end.Sub(killed).Round(time.Millisecond), r.err)
		}
	}
	if e.srv.cold.lostHost.Load() == 0 {
		t.Logf("no request was in flight on %s when it died (none held again)", dead.id)
	}
	if got := e.loadsOfKey(k, alive.id); got != 1 {
		t.Errorf("%s loaded %d times on %s after %s died, want 1", x, got, alive.id, dead.id)
	}
	if got := e.loadsOfKey(k, dead.id); got != 1 {
		t.Errorf("%s loaded %d times on %s, want 1", x, got, dead.id)
	}
	t.Logf("%s (simulated load %v) on %s, killed; placed on %s: %d requests, %d served, %d held as cold starts (%d of them caught by the kill), %d cold-start UNAVAILABLE, %d other UNAVAILABLE; the first request sent after it was gone served %v after that",
		x, coldLoadTime(coldCustBytes), dead.id, alive.id, len(results), ok, e.srv.cold.started.Load()-heldBefore, e.srv.cold.lostHost.Load(), coldStart, hostDown, firstOK.Sub(gone).Round(time.Millisecond))
	// The dead host's value is gone from KV: the gateway's view (what its
	// cold-start messages name) no longer lists it.
	testwait.UntilNil(t, "the gateway's KV view of "+x+" to name only "+alive.id, func() error {
		if hosts, _ := e.srv.placer.placed(k); !slices.Equal(hosts, []string{alive.id}) {
			return fmt.Errorf("assigned to %v", hosts)
		}
		return nil
	})
	if e.guard.calls.Load() == 0 || e.guard.bad.Load() != 0 {
		t.Errorf("backend calls %d, to hosts without the version %d; want some calls, none without", e.guard.calls.Load(), e.guard.bad.Load())
	}
}

// TestPlacementDropDrains: model X pinned to two copies on two hosts, served by
// both under steady traffic; the pin is removed, so the controller drops one
// copy (the other serves the demand). The gateway stops routing X to the
// dropped host when the assignment changes, before that host's sidecar unloads
// it (after its drain): no request reaches a host without X, none fails, and the
// dropped host serves X no more once unassigned.
func TestPlacementDropDrains(t *testing.T) {
	const x = "cust-a"
	k := placement.Key{Model: x, Version: 1}
	e := startColdEnvWith(t, coldEnvConfig{
		coldStart: "{max_wait: 20s}",
		policy:    "{min_residency: 1s, copy_rate: 1000000}",
		hosts:     2,
		models:    map[string]int64{x: coldCustBytes},
		pins:      "[{model: cust-a, version: 1, min_copies: 2}]",
	})
	e.waitDefault()
	testwait.Until(t, x+" AVAILABLE on both hosts", func() bool {
		return len(e.guard.Backends.AvailableHosts(x, 1, []string{"main"})) == 2
	})

	var (
		stop   = make(chan struct{})
		wg     sync.WaitGroup
		mu     sync.Mutex
		failed []error
	)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := e.predictModel(ctx, x, 1)
				cancel()
				if err != nil {
					mu.Lock()
					failed = append(failed, err)
					mu.Unlock()
				}
			}
		}()
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	testwait.Until(t, x+" traffic served by both hosts", func() bool {
		return e.guard.servedBy(e.hosts[0].addr, x, 1) > 0 && e.guard.servedBy(e.hosts[1].addr, x, 1) > 0
	})

	// Drop the pin: one copy goes.
	b, err := os.ReadFile(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(b), "\n  pins: [{model: cust-a, version: 1, min_copies: 2}]", "", 1)
	if cfg == string(b) {
		t.Fatal("routing config has no pins line to remove")
	}
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	var kept, dropped *coldHost
	testwait.Until(t, "the assignment to keep "+x+" on one host", func() bool {
		hosts, _ := e.srv.placer.placed(k)
		if len(hosts) != 1 {
			return false
		}
		kept = e.host(hosts[0])
		for _, h := range e.hosts {
			if h != kept {
				dropped = h
			}
		}
		return true
	})
	servedDropped := e.guard.servedBy(dropped.addr, x, 1)
	conn, err := grpc.NewClient(dropped.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ms := servingpb.NewModelServiceClient(conn)
	testwait.Until(t, dropped.id+" to unload "+x, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := ms.GetModelStatus(ctx, &servingpb.GetModelStatusRequest{ModelSpec: &servingpb.ModelSpec{Name: x}})
		if status.Code(err) == codes.NotFound {
			return true
		}
		for _, st := range resp.GetModelVersionStatus() {
			if st.GetVersion() == 1 && st.GetState() == servingpb.ModelVersionStatus_AVAILABLE {
				return false
			}
		}
		return err == nil
	})
	// Traffic goes on past the unload (readiness alone would notice it only at
	// its next poll of the host).
	after := e.guard.servedBy(kept.addr, x, 1)
	testwait.Until(t, "200 more requests served by "+kept.id, func() bool { return e.guard.servedBy(kept.addr, x, 1) >= after+200 })
	close(stop)
	wg.Wait()

	for _, err := range failed {
		t.Errorf("request for %s: %v; want all served", x, err)
	}
	// At most requests already in flight when the gateway saw the change reach
	// the dropped host after it (its copy was still loaded, draining).
	late := e.guard.servedBy(dropped.addr, x, 1) - servedDropped
	if late > 4 {
		t.Errorf("%s served %d requests for %s after the assignment dropped it; want at most the 4 in flight", dropped.id, late, x)
	}
	t.Logf("%s dropped from %s (kept on %s): %d backend calls, %d to a host without it, %d served by %s after the drop",
		x, dropped.id, kept.id, e.guard.calls.Load(), e.guard.bad.Load(), late, dropped.id)
	if e.guard.calls.Load() == 0 || e.guard.bad.Load() != 0 {
		t.Errorf("backend calls %d, to hosts without the version %d; want some calls, none without", e.guard.calls.Load(), e.guard.bad.Load())
	}
}
