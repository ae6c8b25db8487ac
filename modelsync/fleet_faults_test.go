package modelsync

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tfgate/tfgate/internal/modelgen"
	"github.com/tfgate/tfgate/internal/servingsim"
	"github.com/tfgate/tfgate/internal/servingsim/model"
	"github.com/tfgate/tfgate/internal/testenv"
	"github.com/tfgate/tfgate/internal/testwait"
	"github.com/tfgate/tfgate/placement"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

// lockedBuffer collects log lines for assertions; safe for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// faultHost is one host of the fault test: servingsim, sidecar, registration.
type faultHost struct {
	*fleetHost
	loadRate      int64         // servingsim --sim_load_bytes_per_second (1: a load never finishes)
	reloadTimeout time.Duration // the sidecar's
	statusFails   atomic.Int64  // failed status writes
	statusOK      atomic.Int64
}

// TestFleetPlacementFaults is issue 14's "bad input and faults" list on a real
// Consul agent (a persistent server, so it can be stopped and started), the S3
// server and servingsim hosts with modelsync sidecars in placement mode, under a
// real controller with RequireStatus and a 5s report TTL. In order:
//
//  1. bad input: a registration without tfgate_capacity_bytes, a catalog entry
//     without a size (an empty object), a version larger than any host: each is
//     a problem in the leader's report (ListPlacement) and its log, and the rest
//     is placed;
//  2. a host that never finishes a load (its servingsim loads at 1 byte/s): its
//     sidecar reports the load failed after its reload timeout, and the
//     controller places the version on another host, explaining why;
//  3. a sidecar that dies mid-sync (its version LOADING): its status goes stale,
//     the controller freezes the host (a problem), keeps its value (nothing is
//     unloaded) and no longer counts its copy: the version is placed elsewhere;
//  4. Consul unreachable: every host keeps serving exactly what it had (nothing
//     unloaded, config and disk untouched) while status writes and the leader
//     lock fail; when Consul is back, the controller leads again and its
//     decision changes nothing;
//  5. a host that leaves has its value deleted once its versions are placed
//     elsewhere, and when it rejoins it is assigned afresh: it does not reload
//     its stale versions.
func TestFleetPlacementFaults(t *testing.T) {
	consul := testenv.StartConsul(t, testenv.ConsulPersistent())
	e := newEnv(t)
	cl := consul.Client(t)
	ctx := t.Context()
	const prefix = "faults"
	storeCfg := placement.StoreConfig{Prefix: prefix, WaitTime: 2 * time.Second,
		BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond}
	store := placement.NewStore(cl, storeCfg)
	var logs lockedBuffer
	logger := slog.New(slog.NewTextHandler(io.MultiWriter(testWriter{t}, &logs), &slog.HandlerOptions{Level: slog.LevelInfo}))
	const reportTTL = 5 * time.Second

	// Hosts: A loads nothing to the end, with a short reload timeout (its sidecar
	// gives up and says so); B is healthy; D loads nothing to the end, with a long
	// reload timeout (its sidecar dies before it gives up).
	const capUnits = 8
	specs := []*faultHost{
		{fleetHost: &fleetHost{id: "serving-a"}, loadRate: 1, reloadTimeout: 3 * time.Second},
		{fleetHost: &fleetHost{id: "serving-b"}, reloadTimeout: testwait.Timeout},
		{fleetHost: &fleetHost{id: "serving-d"}, loadRate: 1, reloadTimeout: 10 * testwait.Timeout},
	}
	ids := []string{"serving-a", "serving-b", "serving-d"}
	weights := []float64{1, 1, 1}
	// ranked finds a model name whose rendezvous candidates start with hosts.
	ranked := func(stem string, hosts ...string) placement.Key {
		for i := 0; ; i++ {
			k := key(fmt.Sprintf("%s%d", stem, i), 1)
			if r := placement.Rank(k, ids, weights); slices.Equal(r[:len(hosts)], hosts) {
				return k
			}
		}
	}
	// Each falls back to serving-b, the host that loads.
	okB := ranked("okb", "serving-b")
	hangA := ranked("hanga", "serving-a", "serving-b")
	hangD := ranked("hangd", "serving-d", "serving-b")
	empty, huge := key("empty", 1), key("huge", 1)

	// The bucket: three real versions of one unit, an empty object, and a
	// version whose object is larger than any host.
	rng := rand.New(rand.NewPCG(14, 15))
	for i, k := range []placement.Key{okB, hangA, hangD, huge} {
		dir := filepath.Join(t.TempDir(), k.String())
		if err := modelgen.Export(dir, modelgen.Spec{Kind: model.KindLinear, Seed: int64(i)}); err != nil {
			t.Fatal(err)
		}
		n := int64(fleetUnit)
		if k == huge {
			n = (capUnits + 2) * fleetUnit
		}
		setResidentBytes(t, dir, n)
		pad := make([]byte, n) // incompressible: the object is at least n bytes
		for j := range pad {
			pad[j] = byte(rng.UintN(256))
		}
		if err := os.MkdirAll(filepath.Join(dir, "assets"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "assets", "pad.bin"), pad, 0o644); err != nil {
			t.Fatal(err)
		}
		e.publish(k.Model, k.Version, dir, false)
	}
	e.putRaw("models/empty/1.tar.gz", nil)

	startHost := func(h *faultHost, rate int64) {
		t.Helper()
		h.capacity = capUnits * fleetUnit
		if h.base == "" {
			h.base, h.cfgFile = t.TempDir(), filepath.Join(t.TempDir(), "models.config")
			if err := os.WriteFile(h.cfgFile, []byte("model_config_list {}\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		h.stopped = false
		scfg := servingsim.DefaultConfig()
		scfg.Port, scfg.ModelConfigFile, scfg.FileSystemPollWait = 0, h.cfgFile, 50*time.Millisecond
		scfg.ModelMemoryLimitBytes, scfg.LoadBytesPerSecond = h.capacity, rate
		addr, stopSim := startFleetSim(t, scfg)
		h.stopSim = stopSim
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		h.conn, h.ms = conn, servingpb.NewModelServiceClient(conn)
		cfg := e.config()
		cfg.BasePath, cfg.QueueURL = h.base, ""
		cfg.TFServingAddr, cfg.ModelConfigFile = addr, h.cfgFile
		cfg.ReloadTimeout = Duration(h.reloadTimeout)
		cfg.CatchUp, cfg.CatchUpInterval = true, 0 // writes the catalog
		cfg.Placement.Enabled, cfg.Placement.Host, cfg.Placement.KVPrefix = true, h.id, prefix
		cfg.Placement.CacheBytes = 0
		cfg.Placement.PollInterval = Duration(50 * time.Millisecond)
		cfg.Placement.StatusInterval = Duration(300 * time.Millisecond)
		h.sc = e.start(cfg, Deps{Logger: logger.With("host", h.id), Placement: PlacementDeps{
			Store: placement.NewStore(cl, storeCfg), TFServing: h.ms,
			OnStatus: func(_ placement.HostStatus, err error) {
				if err != nil {
					h.statusFails.Add(1)
				} else {
					h.statusOK.Add(1)
				}
			}}})
		if err := cl.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: h.id, Name: "tfserving",
			Address: "127.0.0.1", Port: portOf(t, addr),
			Meta: map[string]string{placement.MetaCapacityBytes: strconv.FormatInt(h.capacity, 10)}}); err != nil {
			t.Fatal(err)
		}
	}
	byID := map[string]*faultHost{}
	for _, h := range specs {
		startHost(h, h.loadRate)
		byID[h.id] = h
	}
	a, b, dh := byID["serving-a"], byID["serving-b"], byID["serving-d"]
	// A host registered without tfgate_capacity_bytes (and nothing behind it).
	if err := cl.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "serving-nocap", Name: "tfserving",
		Address: "127.0.0.1", Port: 1}); err != nil {
		t.Fatal(err)
	}
	testwait.UntilNil(t, "the catalog in KV and every host's status", func() error {
		vs, _, err := store.ReadCatalog(ctx)
		if err != nil || len(vs) != 5 {
			return fmt.Errorf("catalog %v, %v", vs, err)
		}
		r, err := store.ReadReports(ctx)
		if err != nil {
			return err
		}
		for _, h := range specs {
			if _, ok := r.Status[h.id]; !ok {
				return fmt.Errorf("no status from %s", h.id)
			}
		}
		return nil
	})

	// Versions enter the decision as the routing config requires them (demand
	// reports would go stale with the 5s TTL).
	var required atomic.Pointer[[]placement.Key]
	require := func(ks ...placement.Key) { required.Store(&ks) }
	require(okB, empty, huge)
	c, err := placement.NewController(cl, placement.ControllerConfig{
		ID: "gw-1", Policy: placement.Config{Default: placement.PoolConfig{MemoryMultiplier: 1}},
		Store: storeCfg,
		Hosts: placement.ConsulHosts(cl, []placement.HostService{{Pool: placement.DefaultPoolName, Service: "tfserving"}}),
		Routing: func() ([]placement.Requirement, map[string]string) {
			var rs []placement.Requirement
			for _, k := range *required.Load() {
				rs = append(rs, placement.Requirement{Key: k, Reason: "default"})
			}
			return rs, nil
		},
		RequireStatus: true, ReportTTL: reportTTL,
		Interval: 300 * time.Millisecond, LockDelay: 10 * time.Millisecond, LockWait: 300 * time.Millisecond,
		RetryMin: 20 * time.Millisecond, RetryMax: 500 * time.Millisecond, Logger: logger.With("controller", "gw-1"),
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- c.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-runDone; err != nil {
			t.Errorf("controller Run: %v", err)
		}
	})

	assignedTo := func(st *placement.Stored, k placement.Key) []string {
		var hs []string
		for id, ha := range st.Assignment.Hosts {
			for _, en := range ha.Entries {
				if en.Key == k {
					hs = append(hs, id)
				}
			}
		}
		slices.Sort(hs)
		return hs
	}
	available := func(h *faultHost, k placement.Key) bool {
		return versionState(h.ms, k) == servingpb.ModelVersionStatus_AVAILABLE
	}
	// problem waits for the leader's report (what ListPlacement shows) to hold a
	// problem of kind naming what, and for the controller's log to say it too.
	problem := func(kind placement.ProblemKind, what string) string {
		t.Helper()
		var msg string
		testwait.UntilNil(t, fmt.Sprintf("a %s problem naming %s in the report and the log", kind, what), func() error {
			rep, err := store.ReadReport(ctx)
			if err != nil {
				return err
			}
			for _, p := range rep.Problems {
				if p.Kind == kind && strings.Contains(p.Message, what) {
					q := strconv.Quote("placement: " + p.Message) // as slog's text handler writes it
					if !strings.Contains(logs.String(), q[1:len(q)-1]) {
						return fmt.Errorf("not logged: %s", p.Message)
					}
					msg = p.Message
					return nil
				}
			}
			return fmt.Errorf("problems %+v", rep.Problems)
		})
		t.Logf("%s: %s", kind, msg)
		return msg
	}
	// onlyOn waits until k is assigned to exactly host and AVAILABLE there.
	onlyOn := func(k placement.Key, h *faultHost) {
		t.Helper()
		testwait.UntilNil(t, fmt.Sprintf("%s assigned to and AVAILABLE on %s only", k, h.id), func() error {
			st, err := store.ReadState(ctx)
			if err != nil {
				return err
			}
			var live []string
			for _, id := range assignedTo(st, k) {
				if !byID[id].stopped && (id != dh.id || dh.sc.cancel != nil) {
					live = append(live, id)
				}
			}
			if !slices.Equal(live, []string{h.id}) {
				return fmt.Errorf("assigned to %v (live %v)", assignedTo(st, k), live)
			}
			if !available(h, k) {
				return fmt.Errorf("%v on %s", versionState(h.ms, k), h.id)
			}
			return nil
		})
	}

	// 1. Bad input.
	problem(placement.HostNoCapacity, `"serving-nocap" has no capacity`)
	problem(placement.BadCatalogEntry, "empty@1 has no usable object size in the catalog (0 bytes)")
	problem(placement.VersionTooLarge, "huge@1 needs")
	onlyOn(okB, b)

	// 2. A host that never finishes a load.
	require(okB, empty, huge, hangA)
	onlyOn(hangA, b)
	testwait.UntilNil(t, "serving-a's failure of "+hangA.String()+" in its status", func() error {
		r, err := store.ReadReports(ctx)
		if err != nil {
			return err
		}
		for _, f := range r.Status[a.id].Failures {
			if f.Model == hangA.Model && strings.Contains(f.Reason, "not AVAILABLE 3s after it was added to the model config") {
				t.Logf("serving-a reports: %s: %s (until %s)", hangA, f.Reason, f.Until.Format(time.RFC3339))
				return nil
			}
		}
		return fmt.Errorf("failures %+v", r.Status[a.id].Failures)
	})
	if d := c.Last(); d != nil {
		if ex, ok := d.Explain(hangA); !ok || !strings.Contains(ex.String(), "load-failure backoff") {
			t.Errorf("explanation of %s: %s; want serving-a's load-failure backoff", hangA, ex)
		} else {
			t.Logf("explanation: %s", ex)
		}
	}
	if !strings.Contains(logs.String(), "assigned version not loadable here") {
		t.Errorf("serving-a's sidecar did not log the failed load")
	}

	// 3. A sidecar that dies mid-sync: D's load of hangD is in progress.
	require(okB, empty, huge, hangA, hangD)
	testwait.Until(t, hangD.String()+" LOADING on serving-d", func() bool {
		return versionState(dh.ms, hangD) == servingpb.ModelVersionStatus_LOADING
	})
	dh.sc.stop(t)
	problem(placement.HostFrozen, `"serving-d" takes no new versions`)
	onlyOn(hangD, b)
	st, err := store.ReadState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := assignedTo(st, hangD); !slices.Contains(got, dh.id) {
		t.Errorf("%s assigned to %v: the frozen serving-d's copy was dropped, want it kept", hangD, got)
	}
	if s := versionState(dh.ms, hangD); s != servingpb.ModelVersionStatus_LOADING {
		t.Errorf("%s on serving-d is %v after its sidecar died, want still LOADING (nothing unloads it)", hangD, s)
	}

	// 4. Consul unreachable: every host keeps what it serves. First serving-a
	// settles: the hung load of hangA, unassigned, was cancelled and removed.
	testwait.UntilNil(t, "serving-a holding nothing", func() error {
		if disk := onDiskUnder(a.base); len(disk) != 0 {
			return fmt.Errorf("on disk %v (%s %v)", disk, hangA, versionState(a.ms, hangA))
		}
		return nil
	})
	type snapshot struct {
		cfg   string
		disk  []placement.Key
		avail []placement.Key
	}
	all := []placement.Key{okB, hangA, hangD, empty, huge}
	snap := func(h *faultHost) snapshot {
		cfg, _ := os.ReadFile(h.cfgFile)
		s := snapshot{cfg: string(cfg), disk: onDiskUnder(h.base)}
		for _, k := range all {
			if available(h, k) {
				s.avail = append(s.avail, k)
			}
		}
		s.avail = sortedKeys(s.avail)
		return s
	}
	before := map[string]snapshot{a.id: snap(a), b.id: snap(b)}
	if want := []placement.Key{hangA, hangD, okB}; !slices.Equal(before[b.id].avail, sortedKeys(want)) {
		t.Fatalf("serving-b serves %v before the outage, want %v", before[b.id].avail, sortedKeys(want))
	}
	d0 := c.Last()
	consul.Stop(t)
	fails := b.statusFails.Load()
	testwait.UntilNil(t, "the controller to lose the lock and serving-b's status writes to fail", func() error {
		if c.IsLeader() {
			return errors.New("still leading")
		}
		if n := b.statusFails.Load() - fails; n < 2 {
			return fmt.Errorf("%d failed status writes", n)
		}
		return nil
	})
	for _, h := range []*faultHost{a, b} {
		if got := snap(h); fmt.Sprint(got) != fmt.Sprint(before[h.id]) {
			t.Errorf("%s changed while Consul was unreachable: %+v -> %+v", h.id, before[h.id], got)
		}
	}
	for _, want := range []string{"placement: leadership lost; stopped writing", "placement: consul watch failed; keeping the last value",
		"placement: writing host status failed; keeping the assignment, retrying"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no log line %q during the outage", want)
		}
	}
	consul.Start(t)
	// The lock's old session outlives the restart by up to its TTL (2x, Consul's
	// grace) before the controller can take it again.
	testwait.UntilNilWithin(t, 2*time.Minute, "the controller leading again and deciding", func() error {
		if !c.IsLeader() {
			return errors.New("not leading")
		}
		if d := c.Last(); d == d0 {
			return errors.New("no decision since the outage")
		}
		return nil
	})
	if d := c.Last(); d.Stats.Added != 0 || d.Stats.Removed != 0 || d.Stats.Moved != 0 {
		t.Errorf("first decision after Consul came back: %+v, want nothing added, removed or moved", d.Stats)
	}
	for _, h := range []*faultHost{a, b} {
		if got := snap(h); fmt.Sprint(got) != fmt.Sprint(before[h.id]) {
			t.Errorf("%s changed after Consul came back: %+v -> %+v", h.id, before[h.id], got)
		}
	}

	// 5. serving-d leaves: its value goes once hangD has a copy elsewhere (it has).
	dh.stop(t)
	if err := cl.Agent().ServiceDeregister(dh.id); err != nil {
		t.Fatal(err)
	}
	testwait.UntilNil(t, "serving-d's assignment cleared", func() error {
		st, err := store.ReadState(ctx)
		if err != nil {
			return err
		}
		if _, ok := st.Written[dh.id]; ok {
			return fmt.Errorf("serving-d still assigned %v", st.Assignment.Hosts[dh.id].Entries)
		}
		return nil
	})
	if !strings.Contains(logs.String(), "cleared the assignment of a host that left") {
		t.Errorf("clearing serving-d was not logged")
	}
	// It rejoins (loads at normal speed now): a fresh assignment, not its stale
	// hangD, which stays on serving-b.
	dh.reloadTimeout = testwait.Timeout
	startHost(dh, 0)
	testwait.UntilNil(t, "serving-d back with a fresh assignment, holding it exactly", func() error {
		st, err := store.ReadState(ctx)
		if err != nil {
			return err
		}
		ha, ok := st.Assignment.Hosts[dh.id]
		if !ok {
			return errors.New("no assignment for serving-d yet")
		}
		var want []placement.Key
		for _, en := range ha.Entries {
			want = append(want, en.Key)
		}
		if slices.Contains(want, hangD) {
			return fmt.Errorf("serving-d was given back its stale %s: %v", hangD, want)
		}
		if got := assignedTo(st, hangD); !slices.Equal(got, []string{b.id}) {
			return fmt.Errorf("%s assigned to %v, want serving-b only", hangD, got)
		}
		if disk := onDiskUnder(dh.base); !slices.Equal(disk, want) {
			return fmt.Errorf("serving-d has %v on disk, assigned %v", disk, want)
		}
		for _, k := range all {
			if available(dh, k) != slices.Contains(want, k) {
				return fmt.Errorf("serving-d: %s is %v (assigned %v)", k, versionState(dh.ms, k), want)
			}
		}
		return nil
	})
	if !available(b, hangD) {
		t.Errorf("%s is %v on serving-b after serving-d rejoined", hangD, versionState(b.ms, hangD))
	}
}

func sortedKeys(ks []placement.Key) []placement.Key {
	out := slices.Clone(ks)
	slices.SortFunc(out, compareKeys)
	return out
}
