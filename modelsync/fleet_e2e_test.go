package modelsync

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tfgate/tfgate/internal/modelgen"
	"github.com/tfgate/tfgate/internal/servingsim"
	"github.com/tfgate/tfgate/internal/servingsim/model"
	"github.com/tfgate/tfgate/internal/testenv"
	"github.com/tfgate/tfgate/internal/testwait"
	"github.com/tfgate/tfgate/modelsync/journal"
	"github.com/tfgate/tfgate/modelsync/reload"
	"github.com/tfgate/tfgate/placement"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

// fleetUnit is the size unit of the fleet test: a version's resident bytes are 1-3
// units, a host's capacity 15-18 units.
const fleetUnit = 32 << 10

// fleetHost is one serving host of the fleet test: an in-process servingsim with
// a memory limit, its modelsync sidecar in placement mode, and its Consul service.
type fleetHost struct {
	id       string
	capacity int64
	base     string
	cfgFile  string
	ms       servingpb.ModelServiceClient
	sc       *sidecar
	stopSim  func()
	conn     *grpc.ClientConn
	stopped  bool
}

func (h *fleetHost) stop(t *testing.T) {
	t.Helper()
	if h.stopped {
		return
	}
	h.stopped = true
	h.sc.stop(t)
	h.conn.Close()
	h.stopSim()
}

// startFleetSim runs a servingsim.Server in process on a loopback port; the
// returned stop ends it (also at cleanup).
func startFleetSim(t *testing.T, cfg servingsim.Config) (string, func()) {
	t.Helper()
	s, err := servingsim.New(cfg)
	if err != nil {
		t.Fatalf("servingsim.New: %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ctx, lis) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("servingsim.Serve: %v", err)
		}
	}
	t.Cleanup(stop)
	select {
	case <-s.Ready():
	case err := <-errc:
		stopped = true
		t.Fatalf("servingsim.Serve: %v", err)
	}
	return lis.Addr().String(), stop
}

// onDiskUnder lists the published versions (numeric directories) under base.
func onDiskUnder(base string) []placement.Key {
	var out []placement.Key
	models, _ := os.ReadDir(base)
	for _, m := range models {
		if !m.IsDir() || strings.HasPrefix(m.Name(), ".") {
			continue
		}
		vs, _ := os.ReadDir(filepath.Join(base, m.Name()))
		for _, v := range vs {
			if n, err := strconv.ParseInt(v.Name(), 10, 64); err == nil && v.IsDir() {
				out = append(out, placement.Key{Model: m.Name(), Version: n})
			}
		}
	}
	slices.SortFunc(out, compareKeys)
	return out
}

func versionState(ms servingpb.ModelServiceClient, k placement.Key) servingpb.ModelVersionStatus_State {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := ms.GetModelStatus(ctx, &servingpb.GetModelStatusRequest{ModelSpec: &servingpb.ModelSpec{
		Name: k.Model, VersionChoice: &servingpb.ModelSpec_Version{Version: wrapperspb.Int64(k.Version)}}})
	if err != nil || len(st.GetModelVersionStatus()) != 1 {
		return servingpb.ModelVersionStatus_UNKNOWN
	}
	return st.GetModelVersionStatus()[0].GetState()
}

// hostsOf maps every version in the assignment to its hosts, sorted.
func hostsOf(a placement.Assignment, live map[string]bool) map[placement.Key][]string {
	out := map[placement.Key][]string{}
	for h, ha := range a.Hosts {
		if !live[h] {
			continue
		}
		for _, e := range ha.Entries {
			out[e.Key] = append(out[e.Key], h)
		}
	}
	for _, hs := range out {
		slices.Sort(hs)
	}
	return out
}

// TestFleetPlacementEndToEnd is issue 14's end-to-end proof, on a real Consul
// agent, fauxqs (SNS -> one SQS queue per host), the S3 server and three
// servingsim hosts with finite memory, each with a modelsync sidecar in placement
// mode, and a real placement controller that reads the hosts from their Consul
// registrations (tfgate_capacity_bytes) and the catalog the sidecars list into
// KV. Thirteen versions of twelve models, 1-3 units each, are more than any host
// holds. It checks that
//
//  1. every version the controller assigned is on disk, in the model config and
//     AVAILABLE on exactly its hosts and on no other (and reported so in KV);
//  2. no host is assigned more bytes than its capacity, nor holds more declared
//     resident bytes than its servingsim memory limit;
//  3. when one host's sidecar and servingsim stop and its registration goes, only
//     that host's versions move (the moved fraction is logged against 1/N), and
//     they become AVAILABLE on the survivors, and its value leaves KV;
//  4. pinned and routed versions (ControllerConfig.Routing) stay resident: their
//     copies on surviving hosts stay AVAILABLE throughout, and afterwards each has
//     its copies with no RequiredNotResident problem.
func TestFleetPlacementEndToEnd(t *testing.T) {
	start := time.Now()
	consul := testenv.StartConsul(t)
	e := newEnv(t)
	cl := consul.Client(t)
	ctx := t.Context()
	const prefix = "fleet"
	storeCfg := placement.StoreConfig{Prefix: prefix, WaitTime: 2 * time.Second,
		BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond}
	store := placement.NewStore(cl, storeCfg)
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: testLogLevel}))

	// Every host's queue is subscribed to the bucket's notification topic.
	e.topic = e.sqs.CreateTopic(t, "fleet-events")
	queues := []testenv.Queue{e.queue}
	for i := 1; i < 3; i++ {
		queues = append(queues, e.sqs.CreateQueue(t, fmt.Sprintf("fleet-host-%d", i),
			testenv.QueueOptions{VisibilityTimeout: 30 * time.Second, MaxReceiveCount: 5}))
	}
	for _, q := range queues {
		e.sqs.Subscribe(t, e.topic, q)
	}

	// The catalog: m00..m11 version 1, and m00 version 2 (an experiment arm).
	// Resident bytes are declared in servingsim.json; an incompressible file of
	// the same size makes the object (what the controller sizes by, x1.0) at
	// least as large, so the controller's count bounds servingsim's.
	rng := rand.New(rand.NewPCG(14, 14))
	var keys []placement.Key
	for i := range 12 {
		keys = append(keys, key(fmt.Sprintf("m%02d", i), 1))
	}
	keys = append(keys, key("m00", 2))
	resident := map[placement.Key]int64{}
	for i, k := range keys {
		dir := filepath.Join(t.TempDir(), k.String())
		if err := modelgen.Export(dir, modelgen.Spec{Kind: model.KindLinear, Seed: int64(i)}); err != nil {
			t.Fatal(err)
		}
		n := int64(1+i%3) * fleetUnit
		resident[k] = n
		setResidentBytes(t, dir, n)
		pad := make([]byte, n)
		for j := range pad {
			pad[j] = byte(rng.UintN(256))
		}
		if err := os.MkdirAll(filepath.Join(dir, "assets"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "assets", "pad.bin"), pad, 0o644); err != nil {
			t.Fatal(err)
		}
		if p := e.publish(k.Model, k.Version, dir, true); p.Size < n {
			t.Fatalf("%s: object %d bytes < resident %d", k, p.Size, n)
		}
	}
	pinned, routed := key("m00", 1), []placement.Key{key("m00", 2), key("m01", 1)}
	required := append([]placement.Key{pinned}, routed...)
	routing := func() ([]placement.Requirement, map[string]string) {
		return []placement.Requirement{
			{Key: pinned, Pinned: true, Reason: "pin", MinCopies: 2},
			{Key: routed[0], Reason: "arm b of exp1"},
			{Key: routed[1], Reason: "default"},
		}, nil
	}

	// Three hosts: servingsim (memory limit = capacity), sidecar, registration.
	caps := []int64{15 * fleetUnit, 16 * fleetUnit, 18 * fleetUnit}
	hosts := make([]*fleetHost, 3)
	byID := map[string]*fleetHost{}
	for i := range hosts {
		cfgFile := filepath.Join(t.TempDir(), "models.config")
		h := &fleetHost{id: fmt.Sprintf("serving-%d", i), capacity: caps[i], base: t.TempDir(), cfgFile: cfgFile}
		if err := os.WriteFile(cfgFile, []byte("model_config_list {}\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		scfg := servingsim.DefaultConfig()
		scfg.Port, scfg.ModelConfigFile, scfg.FileSystemPollWait = 0, cfgFile, 50*time.Millisecond
		scfg.ModelMemoryLimitBytes = h.capacity
		addr, stopSim := startFleetSim(t, scfg)
		h.stopSim = stopSim
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() }) // after the sidecar's stop (cleanups run last first)
		h.conn, h.ms = conn, servingpb.NewModelServiceClient(conn)

		cfg := e.config()
		cfg.BasePath, cfg.QueueURL = h.base, queues[i].URL
		cfg.TFServingAddr, cfg.ModelConfigFile = addr, cfgFile
		cfg.ReloadTimeout = Duration(testwait.Timeout)
		cfg.CatchUp, cfg.CatchUpInterval = true, 0 // placement mode: writes the catalog
		cfg.Placement.Enabled, cfg.Placement.Host, cfg.Placement.KVPrefix = true, h.id, prefix
		cfg.Placement.CacheBytes = 0
		cfg.Placement.PollInterval = Duration(50 * time.Millisecond)
		cfg.Placement.StatusInterval = Duration(300 * time.Millisecond)
		h.sc = e.start(cfg, Deps{Logger: logger.With("host", h.id),
			Placement: PlacementDeps{Store: placement.NewStore(cl, storeCfg), TFServing: h.ms}})

		if err := cl.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: h.id, Name: "tfserving",
			Address: "127.0.0.1", Port: portOf(t, addr),
			Meta: map[string]string{placement.MetaCapacityBytes: strconv.FormatInt(h.capacity, 10)}}); err != nil {
			t.Fatal(err)
		}
		hosts[i], byID[h.id] = h, h
	}

	// The sidecars list the bucket into the catalog and report; the controller
	// starts once it would see the whole fleet (RequireStatus freezes a host whose
	// sidecar has not reported; a first decision on part of the fleet would stick
	// for min_residency).
	testwait.UntilNil(t, "the catalog in KV and every host's status", func() error {
		vs, _, err := store.ReadCatalog(ctx)
		if err != nil || len(vs) != len(keys) {
			return fmt.Errorf("catalog %d versions, %v", len(vs), err)
		}
		r, err := store.ReadReports(ctx)
		if err != nil {
			return err
		}
		for _, h := range hosts {
			if _, ok := r.Status[h.id]; !ok {
				return fmt.Errorf("no status from %s", h.id)
			}
		}
		return nil
	})
	now := time.Now()
	var dv []placement.DemandVersion
	for i, k := range keys {
		dv = append(dv, placement.DemandVersion{Model: k.Model, Version: k.Version, Rate: 1, LastUsed: now.Add(-time.Duration(i) * time.Second)})
	}
	if err := store.PutDemand(ctx, placement.DemandReport{Gateway: "gw-1", Updated: now, Versions: dv}); err != nil {
		t.Fatal(err)
	}
	c, err := placement.NewController(cl, placement.ControllerConfig{
		ID: "gw-1", Policy: placement.Config{Default: placement.PoolConfig{MemoryMultiplier: 1}},
		Store:   storeCfg,
		Hosts:   placement.ConsulHosts(cl, []placement.HostService{{Pool: placement.DefaultPoolName, Service: "tfserving"}}),
		Routing: routing, RequireStatus: true, ReportTTL: 10 * time.Minute,
		Interval: 500 * time.Millisecond, LockDelay: 10 * time.Millisecond, LockWait: 300 * time.Millisecond,
		RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond, Logger: logger.With("controller", "gw-1"),
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

	// checkCapacity: the assignment never exceeds a host, by the controller's
	// count or by the resident bytes servingsim reserves. It is never acceptable,
	// so it fails the test at once, not at the end of a wait.
	checkCapacity := func(st *placement.Stored, live map[string]bool) {
		t.Helper()
		for id, ha := range st.Assignment.Hosts {
			h := byID[id]
			if h == nil || !live[id] {
				continue
			}
			var counted, declared int64
			for _, en := range ha.Entries {
				counted += en.Bytes
				declared += resident[en.Key]
			}
			if counted > h.capacity || declared > h.capacity {
				t.Errorf("%s assigned %d bytes (declared resident %d) over its capacity %d: %v", id, counted, declared, h.capacity, ha.Entries)
			}
		}
	}
	// converged waits until every version has its copies (the pin 2, the rest 1)
	// among the live hosts, and each live host holds exactly its assignment: on
	// disk, in its model config, AVAILABLE in its servingsim (every other version
	// not), and reported resident in KV with no failures. It returns the assignment. during runs on every poll.
	converged := func(what string, live map[string]bool, during func()) *placement.Stored {
		t.Helper()
		var got *placement.Stored
		testwait.UntilNil(t, what, func() error {
			if during != nil {
				during()
			}
			st, err := store.ReadState(ctx)
			if err != nil {
				return err
			}
			checkCapacity(st, live)
			where := hostsOf(st.Assignment, live)
			for _, k := range keys {
				want := 1
				if k == pinned {
					want = 2
				}
				if len(where[k]) != want {
					return fmt.Errorf("%s assigned to %v, want %d copies", k, where[k], want)
				}
			}
			r, err := store.ReadReports(ctx)
			if err != nil {
				return err
			}
			for id := range live {
				h := byID[id]
				var want []placement.Key
				for _, en := range st.Assignment.Hosts[id].Entries {
					if en.Draining {
						return fmt.Errorf("%s: %s still draining", id, en.Key)
					}
					want = append(want, en.Key)
				}
				if disk := onDiskUnder(h.base); !slices.Equal(disk, want) {
					return fmt.Errorf("%s: on disk %v, assigned %v", id, disk, want)
				}
				mc, err := reload.ReadConfig(h.cfgFile)
				if err != nil {
					return err
				}
				var configured []placement.Key
				for _, m := range mc.GetModelConfigList().GetConfig() {
					for _, v := range m.GetModelVersionPolicy().GetSpecific().GetVersions() {
						configured = append(configured, key(m.GetName(), v))
					}
				}
				slices.SortFunc(configured, compareKeys)
				if !slices.Equal(configured, want) {
					return fmt.Errorf("%s: model config %v, assigned %v", id, configured, want)
				}
				for _, k := range keys {
					s := versionState(h.ms, k)
					if assigned := slices.Contains(want, k); assigned != (s == servingpb.ModelVersionStatus_AVAILABLE) {
						return fmt.Errorf("%s: %s is %v (assigned: %v)", id, k, s, assigned)
					}
				}
				var rep []placement.Key
				for _, v := range r.Status[id].Resident {
					rep = append(rep, key(v.Model, v.Version))
				}
				if !slices.Equal(rep, want) {
					return fmt.Errorf("%s: reports %v resident, assigned %v", id, rep, want)
				}
				if len(r.Status[id].Failures) > 0 {
					return fmt.Errorf("%s: reports failures %+v", id, r.Status[id].Failures)
				}
			}
			got = st
			return nil
		})
		return got
	}

	all := map[string]bool{}
	for _, h := range hosts {
		all[h.id] = true
	}
	st := converged("the whole fleet holding exactly its assignment", all, nil)
	before := hostsOf(st.Assignment, all)
	for _, h := range hosts {
		var n int64
		for _, en := range st.Assignment.Hosts[h.id].Entries {
			n += en.Bytes
		}
		t.Logf("%s: capacity %d units, assigned %d versions, %.1f units: %v", h.id, h.capacity/fleetUnit,
			len(st.Assignment.Hosts[h.id].Entries), float64(n)/fleetUnit, st.Assignment.Hosts[h.id].Entries)
	}
	ids := []string{hosts[0].id, hosts[1].id, hosts[2].id}
	weights := []float64{float64(caps[0]), float64(caps[1]), float64(caps[2])}
	first := 0
	for _, k := range keys {
		if slices.Contains(before[k], placement.Rank(k, ids, weights)[0]) {
			first++
		}
	}
	t.Logf("%d of %d versions on their first rendezvous candidate (weights = capacities)", first, len(keys))
	var total int64
	for _, n := range resident {
		total += n
	}
	if total+resident[pinned] <= slices.Max(caps) {
		t.Fatalf("the catalog (%d bytes) fits one host: the test proves nothing about capacity", total)
	}

	// Every notification (13 per queue, before any assignment) was acknowledged
	// and skipped; what is on disk came through the assignment.
	for _, q := range queues {
		testwait.Until(t, "queue "+q.Name+" drained", func() bool { v, f := e.sqs.Count(t, q.URL); return v == 0 && f == 0 })
	}
	for _, h := range hosts {
		for _, en := range h.sc.snapshot() {
			if en.Model != "" && en.Trigger != triggerPlacement && en.Outcome != journal.Ignored {
				t.Errorf("%s: notification outcome %+v, want ignored (placement fetches what is assigned)", h.id, en)
			}
		}
	}

	// One host leaves: its sidecar and servingsim stop, its registration goes.
	// The most loaded host, so the most moves.
	victim := hosts[0]
	for _, h := range hosts[1:] {
		if len(st.Assignment.Hosts[h.id].Entries) > len(st.Assignment.Hosts[victim.id].Entries) {
			victim = h
		}
	}
	live := map[string]bool{}
	for _, h := range hosts {
		if h != victim {
			live[h.id] = true
		}
	}
	// Required versions with a copy on a survivor: that copy must stay AVAILABLE.
	keep := map[placement.Key][]string{}
	for _, k := range required {
		for _, id := range before[k] {
			if live[id] {
				keep[k] = append(keep[k], id)
			}
		}
	}
	victim.stop(t)
	if err := cl.Agent().ServiceDeregister(victim.id); err != nil {
		t.Fatal(err)
	}
	c.Trigger()
	lostResident := false
	after := converged(victim.id+"'s versions placed and AVAILABLE on the survivors", live, func() {
		for k, ids := range keep {
			for _, id := range ids {
				if s := versionState(byID[id].ms, k); s != servingpb.ModelVersionStatus_AVAILABLE && !lostResident {
					lostResident = true
					t.Errorf("required %s on surviving %s is %v while %s leaves", k, id, s, victim.id)
				}
			}
		}
	})
	now2 := hostsOf(after.Assignment, live)
	moved := 0
	for _, k := range keys {
		wasOnVictim := slices.Contains(before[k], victim.id)
		stayed := slices.DeleteFunc(slices.Clone(before[k]), func(id string) bool { return id == victim.id })
		switch {
		case wasOnVictim:
			moved++
			for _, id := range stayed {
				if !slices.Contains(now2[k], id) {
					t.Errorf("%s: its copy on surviving %s went (before %v, after %v)", k, id, before[k], now2[k])
				}
			}
		case !slices.Equal(before[k], now2[k]):
			t.Errorf("%s was not on %s but moved: %v -> %v", k, victim.id, before[k], now2[k])
		}
	}
	frac := float64(moved) / float64(len(keys))
	var shares []string
	sum := 0
	for _, h := range hosts {
		n := 0
		for _, k := range keys {
			if slices.Contains(before[k], h.id) {
				n++
			}
		}
		sum += n
		shares = append(shares, fmt.Sprintf("%s %d", h.id, n))
	}
	t.Logf("versions each host's leaving would move: %s; mean %.2f of the versions", strings.Join(shares, ", "), float64(sum)/3/float64(len(keys)))
	t.Logf("%s left: %d of %d versions moved (%.2f; 1/N = %.2f), %d of %d copies were on it; run %v so far",
		victim.id, moved, len(keys), frac, 1/3.0, len(st.Assignment.Hosts[victim.id].Entries), len(keys)+1, time.Since(start).Round(time.Millisecond))
	if moved == 0 {
		t.Errorf("no version was on %s: the test moved nothing", victim.id)
	}

	// Pinned and routed versions: resident with their copies, nothing reported short.
	rep, err := store.ReadReport(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Stats.PendingRequired != 0 || rep.Stats.Pending != 0 {
		t.Errorf("report after %s left: %+v", victim.id, rep.Stats)
	}
	for _, p := range rep.Problems {
		if p.Kind == placement.RequiredNotResident {
			t.Errorf("problem: %s", p.Message)
		}
	}
	if d := c.Last(); d == nil || d.Stats.Moved != 0 {
		t.Errorf("last decision %+v: want no rebalancing moves", d)
	}

	// Settled: deciding again changes nothing.
	d0 := c.Last()
	c.Trigger()
	testwait.Until(t, "another decision", func() bool { return c.Last() != d0 })
	if d := c.Last(); d.Stats.Added != 0 || d.Stats.Removed != 0 || d.Stats.Moved != 0 || d.Stats.Evicted != 0 || d.Stats.Pending != 0 {
		t.Errorf("a decision after the fleet settled: %+v, want nothing added, removed, moved, evicted or pending", d.Stats)
	}
	final, err := store.ReadState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := hostsOf(final.Assignment, live); fmt.Sprint(got) != fmt.Sprint(now2) {
		t.Errorf("placement changed after the fleet settled: %v -> %v", now2, got)
	}
	if _, ok := final.Written[victim.id]; ok {
		t.Errorf("%s left but its assignment is still in KV: %v", victim.id, final.Assignment.Hosts[victim.id].Entries)
	}
	t.Logf("settled decision %+v; took %v", c.Last().Stats, time.Since(start).Round(time.Millisecond))
}

// setResidentBytes declares a version's resident_bytes in its servingsim.json.
func setResidentBytes(t *testing.T, dir string, n int64) {
	t.Helper()
	p := filepath.Join(dir, model.SpecPath)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	m["resident_bytes"] = n
	if b, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
