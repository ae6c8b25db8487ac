package placement

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/tfgate/tfgate/internal/testenv"
)

// waitFor polls cond until it holds; the deadline is only a bound for a broken test.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type runningController struct {
	c       *Controller
	cancel  context.CancelFunc
	done    chan error
	stopped bool
}

func (r *runningController) stop(t *testing.T) {
	t.Helper()
	if r.stopped {
		return
	}
	r.stopped = true
	r.cancel()
	if err := <-r.done; err != nil {
		t.Errorf("controller %s Run: %v", r.c.cfg.ID, err)
	}
}

func startController(t *testing.T, cl *api.Client, id string, hosts []Host, catalog []Version) *runningController {
	t.Helper()
	logger := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("controller", id)
	}
	c, err := NewController(cl, ControllerConfig{
		ID:       id,
		Policy:   Config{Default: PoolConfig{MemoryMultiplier: 1}},
		Store:    StoreConfig{Prefix: "t", WaitTime: time.Second, BackoffMin: 20 * time.Millisecond},
		Hosts:    func(context.Context) ([]Host, error) { return hosts, nil },
		Catalog:  func(context.Context) ([]Version, error) { return catalog, nil },
		Interval: 200 * time.Millisecond, LockDelay: 10 * time.Millisecond, LockWait: 300 * time.Millisecond,
		RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond, Logger: logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningController{c: c, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (c *Controller) writes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.written
}

// TestControllerLeadership: two controllers race for one lock; exactly one
// writes. When the leader stops, the other takes over and continues from KV
// without moving anything. A leader whose session is invalidated stops writing,
// and the session it held can no longer write (a deposed leader that has not
// noticed cannot overwrite its successor).
func TestControllerLeadership(t *testing.T) {
	consul := testenv.StartConsul(t)
	cl := consul.Client(t)
	ctx := t.Context()
	hosts := mkHosts(4, 300*mb)
	catalog := mkCatalog(200, 10*mb)
	store := NewStore(cl, StoreConfig{Prefix: "t"})
	now := time.Now()
	var dv []DemandVersion
	for i, v := range catalog[:150] {
		dv = append(dv, DemandVersion{Model: v.Model, Version: v.Version, Rate: 1, LastUsed: now.Add(-time.Duration(i) * time.Second)})
	}
	if err := store.PutDemand(ctx, DemandReport{Gateway: "g1", Updated: now, Versions: dv}); err != nil {
		t.Fatal(err)
	}

	a := startController(t, cl, "a", hosts, catalog)
	b := startController(t, cl, "b", hosts, catalog)
	var leader, follower *runningController
	waitFor(t, "a leader that has written", func() bool {
		if a.c.IsLeader() && b.c.IsLeader() {
			t.Fatal("both controllers lead")
		}
		switch {
		case a.c.IsLeader() && a.c.writes() > 0:
			leader, follower = a, b
		case b.c.IsLeader() && b.c.writes() > 0:
			leader, follower = b, a
		}
		return leader != nil
	})
	if follower.c.writes() != 0 {
		t.Fatalf("follower %s wrote %d times", follower.c.cfg.ID, follower.c.writes())
	}
	before, err := store.ReadState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(before.Assignment.Hosts); n != 4 {
		t.Fatalf("assignment has %d hosts, want 4", n)
	}
	placed := 0
	for _, ha := range before.Assignment.Hosts {
		placed += len(ha.Entries)
	}
	t.Logf("leader %s placed %d copies", leader.c.cfg.ID, placed)
	rep, err := store.ReadReport(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Leader != leader.c.cfg.ID || rep.Stats.Placed != placed || rep.Stats.Pending != 30 {
		t.Errorf("report: leader %q stats %+v, want leader %q, %d placed, 30 pending", rep.Leader, rep.Stats, leader.c.cfg.ID, placed)
	}

	// Graceful handover: the leader stops; the follower leads at once (the lock
	// is released, not left to expire) and reshuffles nothing.
	leader.stop(t)
	waitFor(t, "the follower to lead and decide", func() bool { return follower.c.IsLeader() && follower.c.writes() > 0 })
	d := follower.c.Last()
	if d.Stats.Added != 0 || d.Stats.Removed != 0 || d.Stats.Moved != 0 {
		t.Fatalf("new leader changed the placement: %+v", d.Stats)
	}
	after, err := store.ReadState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	assignmentsEqual(t, after.Assignment, before.Assignment)

	// Leader loss: its session is invalidated (as when it is partitioned away or
	// killed and the TTL runs out). It stops writing; its session cannot write.
	sid := follower.c.session.Load().(string)
	if sid == "" {
		t.Fatal("leader has no session")
	}
	stale, err := store.ReadState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Session().Destroy(sid, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the deposed leader to stop leading", func() bool { return follower.c.session.Load().(string) != sid })
	// A new leader (here: a third controller) takes the lock.
	c3 := startController(t, cl, "c", hosts, catalog)
	waitFor(t, "someone to lead again", func() bool {
		return (c3.c.IsLeader() && c3.c.writes() > 0) || (follower.c.IsLeader() && follower.c.session.Load().(string) != sid)
	})
	moved := Assignment{Hosts: map[string]HostAssignment{"host-00": {Pool: "default"}}}
	if _, err := store.WriteAssignment(ctx, sid, moved, stale); !errors.Is(err, ErrConflict) {
		t.Fatalf("write with the deposed leader's session: %v, want ErrConflict", err)
	}
	final, _ := store.ReadState(ctx)
	assignmentsEqual(t, final.Assignment, before.Assignment)
	follower.stop(t)
	c3.stop(t)
}

// TestControllerDemandTriggers: a demand report is acted on at once, not at the
// next interval (the gateway's cold-start path relies on it).
func TestControllerDemandTriggers(t *testing.T) {
	consul := testenv.StartConsul(t)
	cl := consul.Client(t)
	ctx := t.Context()
	catalog := mkCatalog(10, 10*mb)
	reader := sdkmetric.NewManualReader()
	c, err := NewController(cl, ControllerConfig{
		ID: "a", Policy: Config{Default: PoolConfig{MemoryMultiplier: 1}},
		Store:    StoreConfig{Prefix: "t", WaitTime: time.Second},
		Hosts:    func(context.Context) ([]Host, error) { return mkHosts(2, 100*mb), nil },
		Catalog:  func(context.Context) ([]Version, error) { return catalog, nil },
		Interval: time.Hour, LockDelay: 10 * time.Millisecond, LockWait: 300 * time.Millisecond,
		MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)),
	})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(rctx) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "first decision", func() bool { return c.writes() > 0 })
	if err := c.Store().PutDemand(ctx, DemandReport{Gateway: "g", Updated: time.Now(),
		Versions: []DemandVersion{{Model: catalog[3].Model, Version: 1, Rate: 1, LastUsed: time.Now()}}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, fmt.Sprintf("%s placed after its demand report", catalog[3].Key), func() bool {
		st, err := c.Store().ReadState(ctx)
		if err != nil {
			return false
		}
		for _, ha := range st.Assignment.Hosts {
			for _, e := range ha.Entries {
				if e.Key == catalog[3].Key {
					return true
				}
			}
		}
		return false
	})
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch data := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range data.DataPoints {
					r, _ := dp.Attributes.Value("result")
					ch, _ := dp.Attributes.Value("change")
					got[m.Name+"/"+r.AsString()+ch.AsString()] += dp.Value
				}
			case metricdata.Gauge[int64]:
				for _, dp := range data.DataPoints {
					k, _ := dp.Attributes.Value("kind")
					got[m.Name+"/"+k.AsString()] = dp.Value
				}
			}
		}
	}
	if got["tfgate.placement.decisions/written"] < 2 || got["tfgate.placement.copies.changed/added"] != 1 ||
		got["tfgate.placement.leader/"] != 1 || got["tfgate.placement.kv.written/"] == 0 {
		t.Errorf("metrics %v: want >= 2 written decisions, 1 copy added, leader 1, kv bytes > 0", got)
	}
}

func TestNewControllerValidates(t *testing.T) {
	_, err := NewController(nil, ControllerConfig{SessionTTL: time.Second, Policy: Config{Default: PoolConfig{Hysteresis: 2}}})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"controller ID", "host source", "session TTL", "hysteresis"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestHostsFromEntries(t *testing.T) {
	got := HostsFromEntries("gpu", []*api.ServiceEntry{
		{Service: &api.AgentService{ID: "h1", Meta: map[string]string{MetaCapacityBytes: "1000", MetaWeight: "2"}}},
		{Service: &api.AgentService{ID: "h2", Meta: map[string]string{MetaCapacityBytes: "lots"}}},
		{Service: nil},
	})
	want := []Host{{ID: "h1", Pool: "gpu", CapacityBytes: 1000, Weight: 2}, {ID: "h2", Pool: "gpu"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

const helperEnv = "TFGATE_PLACEMENT_HELPER_CONSUL"

// TestHelperLeader is not a test: run as a child process (see
// TestControllerKilledLeader) it is a controller that leads until SIGKILLed.
func TestHelperLeader(t *testing.T) {
	addr := os.Getenv(helperEnv)
	if addr == "" {
		t.Skip("helper process only")
	}
	cfg := api.DefaultConfig()
	cfg.Address = addr
	cl, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := startController(t, cl, "killed", mkHosts(4, 300*mb), mkCatalog(200, 10*mb))
	waitFor(t, "leading", func() bool { return r.c.IsLeader() && r.c.writes() > 0 })
	fmt.Println("HELPER-LEADING")
	select {} // until killed
}

// TestControllerKilledLeader: the leader process is SIGKILLed (no release, no
// session destroy); the follower takes over once the session TTL runs out and
// continues from KV without moving anything.
func TestControllerKilledLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a 10s session TTL to expire")
	}
	consul := testenv.StartConsul(t)
	cl := consul.Client(t)
	ctx := t.Context()
	store := NewStore(cl, StoreConfig{Prefix: "t"})
	catalog := mkCatalog(200, 10*mb)
	now := time.Now()
	var dv []DemandVersion
	for i, v := range catalog[:150] {
		dv = append(dv, DemandVersion{Model: v.Model, Version: v.Version, Rate: 1, LastUsed: now.Add(-time.Duration(i) * time.Second)})
	}
	if err := store.PutDemand(ctx, DemandReport{Gateway: "g1", Updated: now.Add(time.Hour), Versions: dv}); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperLeader$", "-test.v")
	cmd.Env = append(os.Environ(), helperEnv+"="+consul.HTTPAddr)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = cmd.Process.Kill()
		}
		_ = cmd.Wait()
	})
	sc := bufio.NewScanner(out)
	leading := false
	for sc.Scan() {
		if strings.Contains(sc.Text(), "HELPER-LEADING") {
			leading = true
			break
		}
	}
	if !leading {
		t.Fatal("helper controller never led")
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	before, err := store.ReadState(ctx)
	if err != nil {
		t.Fatal(err)
	}

	follower := startController(t, cl, "follower", mkHosts(4, 300*mb), catalog)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed = true
	start := time.Now()
	waitFor(t, "the follower to take over", func() bool { return follower.c.IsLeader() && follower.c.writes() > 0 })
	t.Logf("handover %v after SIGKILL (session TTL 10s; Consul allows up to 2x, plus lock-delay)", time.Since(start).Round(100*time.Millisecond))
	d := follower.c.Last()
	if d.Stats.Added != 0 || d.Stats.Removed != 0 || d.Stats.Moved != 0 {
		t.Fatalf("new leader changed the placement: %+v", d.Stats)
	}
	after, err := store.ReadState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	assignmentsEqual(t, after.Assignment, before.Assignment)
}

// TestControllerKeepsPlacementOnEmptyInput: a catalog that comes back empty while
// models are placed is a glitch, not a reason to unload the fleet.
func TestControllerKeepsPlacementOnEmptyInput(t *testing.T) {
	consul := testenv.StartConsul(t)
	cl := consul.Client(t)
	ctx := t.Context()
	catalog := mkCatalog(10, 10*mb)
	var empty atomic.Bool
	store := NewStore(cl, StoreConfig{Prefix: "t"})
	now := time.Now()
	if err := store.PutDemand(ctx, DemandReport{Gateway: "g", Updated: now, Versions: []DemandVersion{{Model: catalog[0].Model, Version: 1, Rate: 1, LastUsed: now}}}); err != nil {
		t.Fatal(err)
	}
	c, err := NewController(cl, ControllerConfig{
		ID: "a", Policy: Config{Default: PoolConfig{MemoryMultiplier: 1}},
		Store: StoreConfig{Prefix: "t", WaitTime: time.Second},
		Hosts: func(context.Context) ([]Host, error) { return mkHosts(2, 100*mb), nil },
		Catalog: func(context.Context) ([]Version, error) {
			if empty.Load() {
				return nil, nil
			}
			return catalog, nil
		},
		Interval: time.Hour, LockDelay: 10 * time.Millisecond, LockWait: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(rctx) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "first decision", func() bool { return c.writes() > 0 })
	before, _ := store.ReadState(ctx)
	if before.Assignment.count() != 1 {
		t.Fatalf("placed %d copies, want 1", before.Assignment.count())
	}
	empty.Store(true)
	c.Trigger()
	waitFor(t, "the empty-catalog decision to be refused", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.failed > 0
	})
	after, _ := store.ReadState(ctx)
	assignmentsEqual(t, after.Assignment, before.Assignment)
}

// TestControllerRequireStatus: with RequireStatus, a host whose sidecar has not
// reported is frozen: a version whose first candidate it is goes elsewhere.
func TestControllerRequireStatus(t *testing.T) {
	consul := testenv.StartConsul(t)
	cl := consul.Client(t)
	ctx := t.Context()
	catalog := mkCatalog(50, mb)
	var v Version
	for _, c := range catalog {
		if Rank(c.Key, hostIDs(2), nil)[0] == "host-01" {
			v = c
			break
		}
	}
	store := NewStore(cl, StoreConfig{Prefix: "t"})
	now := time.Now()
	if err := store.PutStatus(ctx, HostStatus{Host: "host-00", Updated: now}); err != nil {
		t.Fatal(err)
	}
	if err := store.PutDemand(ctx, DemandReport{Gateway: "g", Updated: now, Versions: []DemandVersion{{Model: v.Model, Version: v.Version, Rate: 1, LastUsed: now}}}); err != nil {
		t.Fatal(err)
	}
	c, err := NewController(cl, ControllerConfig{
		ID: "a", Policy: Config{Default: PoolConfig{MemoryMultiplier: 1}}, RequireStatus: true,
		Store:    StoreConfig{Prefix: "t", WaitTime: time.Second},
		Hosts:    func(context.Context) ([]Host, error) { return mkHosts(2, 100*mb), nil },
		Catalog:  func(context.Context) ([]Version, error) { return catalog, nil },
		Interval: time.Hour, LockDelay: 10 * time.Millisecond, LockWait: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(rctx) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "first decision", func() bool { return c.writes() > 0 })
	if got := hostsOf(c.Last(), v.Key); !reflect.DeepEqual(got, []string{"host-00"}) {
		t.Errorf("%s on %v, want host-00 (host-01 has no status)", v.Key, got)
	}
}

// TestControllerClearsDepartedHost: a host that leaves keeps its value until a
// decision has re-placed its versions; then that value is deleted from KV (the
// watchers see the host gone), later decisions do not count its copies as
// removed again and change nothing; when it comes back it is assigned afresh,
// not its stale versions (which now live elsewhere), and no version gets more
// copies than it wants.
func TestControllerClearsDepartedHost(t *testing.T) {
	consul := testenv.StartConsul(t)
	cl := consul.Client(t)
	ctx := t.Context()
	catalog := mkCatalog(30, 10*mb)
	store := NewStore(cl, StoreConfig{Prefix: "t"})
	now := time.Now()
	var dv []DemandVersion
	for _, v := range catalog {
		dv = append(dv, DemandVersion{Model: v.Model, Version: v.Version, Rate: 1, LastUsed: now})
	}
	if err := store.PutDemand(ctx, DemandReport{Gateway: "g", Updated: now, Versions: dv}); err != nil {
		t.Fatal(err)
	}
	var hosts atomic.Pointer[[]Host]
	three := mkHosts(3, 300*mb)
	hosts.Store(&three)
	var logs syncBuffer
	c, err := NewController(cl, ControllerConfig{
		ID: "a", Policy: Config{Default: PoolConfig{MemoryMultiplier: 1}},
		Store:    StoreConfig{Prefix: "t", WaitTime: time.Second},
		Hosts:    func(context.Context) ([]Host, error) { return slices.Clone(*hosts.Load()), nil },
		Catalog:  func(context.Context) ([]Version, error) { return catalog, nil },
		Interval: time.Hour, LockDelay: 10 * time.Millisecond, LockWait: 300 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(rctx) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "first decision", func() bool { return c.writes() > 0 })
	stale := keysOf(c.Last().Assignment.Hosts["host-02"].Entries)
	if len(stale) == 0 {
		t.Fatal("nothing on host-02")
	}
	updates := make(chan *Stored, 16)
	wctx, wcancel := context.WithCancel(ctx)
	wdone := make(chan error, 1)
	go func() { wdone <- store.WatchState(wctx, updates) }()
	defer func() { wcancel(); <-wdone }()

	two := three[:2]
	hosts.Store(&two)
	decide := func() *Decision {
		t.Helper()
		w := c.writes()
		c.Trigger()
		waitFor(t, "a decision", func() bool { return c.writes() > w })
		return c.Last()
	}
	d := decide()
	if d.Stats.Removed != len(stale) || d.Stats.Added != len(stale) || d.Stats.Pending != 0 {
		t.Fatalf("decision after host-02 left: %+v, want %d removed and added", d.Stats, len(stale))
	}
	st, err := store.ReadState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := st.Written["host-02"]; ok {
		t.Errorf("host-02's value is still in KV after its versions were re-placed: %v", st.Assignment.Hosts["host-02"].Entries)
	}
	if keys, _, err := cl.KV().Keys(store.HostPrefix(DefaultPoolName, "host-02"), "", nil); err != nil || len(keys) != 0 {
		t.Errorf("keys left under host-02: %v %v", keys, err)
	}
	// A watcher (a gateway) sees host-02 gone.
	for seen := false; !seen; {
		select {
		case v := <-updates:
			_, there := v.Assignment.Hosts["host-02"]
			seen = !there && len(v.Assignment.Hosts) == 2
		case <-time.After(time.Minute):
			t.Fatal("no watch update without host-02")
		}
	}
	if !strings.Contains(logs.String(), "cleared the assignment of a host that left") || !strings.Contains(logs.String(), "host=host-02") {
		t.Errorf("no log line for clearing host-02:\n%s", logs.String())
	}
	for range 2 {
		if d := decide(); d.Stats.Removed != 0 || d.Stats.Added != 0 || d.Stats.Kept != d.Stats.Copies || d.Stats.Copies != len(catalog) {
			t.Errorf("decision after the move: %+v, want nothing removed or added, %d kept", d.Stats, len(catalog))
		}
	}

	// host-02 comes back: a fresh assignment (its stale versions are placed
	// elsewhere and too young to move back), every version still on one host.
	hosts.Store(&three)
	d = decide()
	if d.Stats.Added != 0 || d.Stats.Removed != 0 || d.Stats.Copies != len(catalog) {
		t.Errorf("decision after host-02 came back: %+v, want nothing added or removed, %d copies", d.Stats, len(catalog))
	}
	st, err = store.ReadState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ha, ok := st.Assignment.Hosts["host-02"]
	if !ok {
		t.Fatal("host-02 came back and has no assignment in KV")
	}
	if len(ha.Entries) != 0 {
		t.Errorf("host-02 came back to %v, want a fresh (empty) assignment, not its stale %v", keysOf(ha.Entries), stale)
	}
	copies := map[Key]int{}
	for _, ha := range st.Assignment.Hosts {
		for _, e := range ha.Entries {
			copies[e.Key]++
		}
	}
	for _, v := range catalog {
		if copies[v.Key] != 1 {
			t.Errorf("%s has %d copies in KV, want 1", v.Key, copies[v.Key])
		}
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestControllerBacksOffOnConflict: another writer (a second controller that
// still believes it leads, an operator) rewrites a host's value behind the
// leader's back. The leader's next write to that host loses its check-and-set:
// it writes nothing over the other value, says so, re-reads and decides from
// what is in KV, and its next write lands.
func TestControllerBacksOffOnConflict(t *testing.T) {
	consul := testenv.StartConsul(t)
	cl := consul.Client(t)
	ctx := t.Context()
	full := mkCatalog(20, 10*mb)
	var catalog atomic.Pointer[[]Version]
	catalog.Store(&full)
	store := NewStore(cl, StoreConfig{Prefix: "t"})
	now := time.Now()
	var dv []DemandVersion
	for _, v := range full {
		dv = append(dv, DemandVersion{Model: v.Model, Version: v.Version, Rate: 1, LastUsed: now})
	}
	if err := store.PutDemand(ctx, DemandReport{Gateway: "g", Updated: now, Versions: dv}); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	c, err := NewController(cl, ControllerConfig{
		ID: "a", Policy: Config{Default: PoolConfig{MemoryMultiplier: 1}},
		Store:    StoreConfig{Prefix: "t", WaitTime: time.Second},
		Hosts:    func(context.Context) ([]Host, error) { return mkHosts(2, 300*mb), nil },
		Catalog:  func(context.Context) ([]Version, error) { return *catalog.Load(), nil },
		Interval: time.Hour, LockDelay: 10 * time.Millisecond, LockWait: 300 * time.Millisecond,
		RetryMin: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(rctx) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "first decision", func() bool { return c.writes() > 0 })
	on0 := c.Last().Assignment.Hosts["host-00"].Entries
	if len(on0) < 2 {
		t.Fatalf("host-00 holds %d versions, want at least 2", len(on0))
	}

	// The other writer: host-00 holds only its first version, from a fresh read.
	st, err := store.ReadState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	other := Assignment{Hosts: map[string]HostAssignment{"host-00": {Pool: DefaultPoolName, Entries: on0[:1]}}}
	if _, err := store.WriteAssignment(ctx, "", other, st); err != nil {
		t.Fatal(err)
	}
	// The leader must now write host-00: one of its versions leaves the catalog.
	gone := on0[len(on0)-1].Key
	less := slices.DeleteFunc(slices.Clone(full), func(v Version) bool { return v.Key == gone })
	catalog.Store(&less)
	failed := func() int { c.mu.Lock(); defer c.mu.Unlock(); return c.failed }
	w, f := c.writes(), failed()
	c.Trigger()
	waitFor(t, "a lost check-and-set, then a decision written", func() bool { return failed() > f && c.writes() > w })
	if !strings.Contains(logs.String(), "placement: decide failed") || !strings.Contains(logs.String(), ErrConflict.Error()) {
		t.Errorf("the conflict was not logged:\n%s", logs.String())
	}
	// It decided from KV: host-00 holds what the decision says, the other
	// writer's value was the previous assignment it decided from.
	final, err := store.ReadState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	assignmentsEqual(t, final.Assignment, c.Last().Assignment)
	for _, e := range final.Assignment.Hosts["host-00"].Entries {
		if e.Key == gone {
			t.Errorf("%s, gone from the catalog, is still on host-00", gone)
		}
	}
	if d := c.Last(); d.Stats.Copies != len(less) {
		t.Errorf("decision after the conflict: %+v, want %d copies", d.Stats, len(less))
	}
}

// TestControllerReportsBadCatalog: catalog entries in KV with a missing, a
// negative and an absurd size (as a hand-written or corrupted catalog could
// hold), read by the controller from a real Consul agent, are each a problem in
// the leader's report (what ListPlacement shows) and its log, and take no room
// from the good version.
func TestControllerReportsBadCatalog(t *testing.T) {
	consul := testenv.StartConsul(t)
	cl := consul.Client(t)
	ctx := t.Context()
	store := NewStore(cl, StoreConfig{Prefix: "t"})
	cat := []Version{{Key: k("good", 1), ObjectBytes: 10 * mb}, {Key: k("missing", 1)}, {Key: k("negative", 1), ObjectBytes: -1},
		{Key: k("absurd", 1), ObjectBytes: math.MaxInt64}}
	if _, err := store.WriteCatalog(ctx, cat, Written{}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	var dv []DemandVersion
	for _, v := range cat {
		dv = append(dv, DemandVersion{Model: v.Model, Version: v.Version, Rate: 1, LastUsed: now})
	}
	if err := store.PutDemand(ctx, DemandReport{Gateway: "g", Updated: now, Versions: dv}); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	c, err := NewController(cl, ControllerConfig{
		ID: "a", Policy: Config{Default: PoolConfig{MemoryMultiplier: 1.2}},
		Store:    StoreConfig{Prefix: "t", WaitTime: time.Second},
		Hosts:    func(context.Context) ([]Host, error) { return mkHosts(2, 300*mb), nil },
		Interval: time.Hour, LockDelay: 10 * time.Millisecond, LockWait: 300 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(rctx) }()
	defer func() { cancel(); <-done }()
	var rep Report
	waitFor(t, "the leader's report", func() bool {
		rep, err = store.ReadReport(ctx)
		return err == nil
	})
	want := map[string]string{
		"missing@1 has no usable object size in the catalog (0 bytes)":   "bad_catalog_entry",
		"negative@1 has no usable object size in the catalog (-1 bytes)": "bad_catalog_entry",
		"absurd@1 needs 9223372036854775807 bytes":                       "version_too_large",
	}
	for msg, kind := range want {
		found := false
		for _, p := range rep.Problems {
			if strings.Contains(p.Message, msg) && p.Kind.String() == kind {
				found = true
				if q := strconv.Quote("placement: " + p.Message); !strings.Contains(logs.String(), q[1:len(q)-1]) {
					t.Errorf("not logged: %s", p.Message)
				}
			}
		}
		if !found {
			t.Errorf("no %s problem %q in the report: %+v", kind, msg, rep.Problems)
		}
	}
	if rep.Stats.Placed != 1 || rep.Stats.Pending != 3 {
		t.Errorf("report stats %+v, want the good version placed, 3 pending", rep.Stats)
	}
}

// TestControllerLocalDemand: the leader's own process's demand, not yet in any
// demand report, is placed by the decision a Trigger runs (the leading
// gateway's cold request does not wait for its report's write).
func TestControllerLocalDemand(t *testing.T) {
	consul := testenv.StartConsul(t)
	cl := consul.Client(t)
	ctx := t.Context()
	catalog := mkCatalog(10, 10*mb)
	var mu sync.Mutex
	local := map[Key]Demand{}
	c, err := NewController(cl, ControllerConfig{
		ID: "a", Policy: Config{Default: PoolConfig{MemoryMultiplier: 1}},
		Store:    StoreConfig{Prefix: "t", WaitTime: time.Second},
		Hosts:    func(context.Context) ([]Host, error) { return mkHosts(2, 100*mb), nil },
		Catalog:  func(context.Context) ([]Version, error) { return catalog, nil },
		Interval: time.Hour, LockDelay: 10 * time.Millisecond, LockWait: 300 * time.Millisecond,
		LocalDemand: func() map[Key]Demand {
			mu.Lock()
			defer mu.Unlock()
			return maps.Clone(local)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(rctx) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "first decision", func() bool { return c.writes() > 0 })
	placed := func() bool {
		st, err := c.Store().ReadState(ctx)
		if err != nil {
			return false
		}
		for _, ha := range st.Assignment.Hosts {
			for _, e := range ha.Entries {
				if e.Key == catalog[5].Key {
					return true
				}
			}
		}
		return false
	}
	if placed() {
		t.Fatalf("%s placed with no demand at all", catalog[5].Key)
	}
	mu.Lock()
	local[catalog[5].Key] = Demand{Rate: 1.0 / 60, LastUsed: time.Now()}
	mu.Unlock()
	c.Trigger()
	waitFor(t, fmt.Sprintf("%s placed on local demand alone (no report in KV)", catalog[5].Key), placed)
	r, err := c.Store().ReadReports(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Demand) != 0 {
		t.Fatalf("demand reports in KV: %v; the test wrote none", r.Demand)
	}
}
