package modelsync

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
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

const testHost = "serving-1"

func key(m string, v int64) placement.Key { return placement.Key{Model: m, Version: v} }

// placementEnv is env plus a Consul agent, a servingsim host and the placement
// store the test writes assignments with.
type placementEnv struct {
	*env
	consul  *testenv.Consul
	store   *placement.Store
	ms      servingpb.ModelServiceClient // servingsim, unwrapped
	tf      *holdingMS                   // what the sidecar talks to
	cfgFile string
	s3      *flakyS3 // counts the sidecar's GETs
	dirs    map[placement.Key]string

	metrics *sdkmetric.ManualReader

	mu       sync.Mutex
	statuses []statusWrite
}

type statusWrite struct {
	st  placement.HostStatus
	err error
}

func newPlacementEnv(t *testing.T) *placementEnv {
	t.Helper()
	pe := &placementEnv{env: newEnv(t), consul: testenv.StartConsul(t), dirs: map[placement.Key]string{}}
	pe.store = placement.NewStore(pe.consul.Client(t), placement.StoreConfig{Prefix: "t", WaitTime: 2 * time.Second,
		BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond})
	pe.cfgFile = filepath.Join(t.TempDir(), "models.config")
	if err := os.WriteFile(pe.cfgFile, []byte("model_config_list {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	scfg := servingsim.DefaultConfig()
	scfg.Port, scfg.ModelConfigFile, scfg.FileSystemPollWait = 0, pe.cfgFile, 50*time.Millisecond
	addr, _ := testenv.StartServingsimInProcess(t, scfg)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	pe.ms = servingpb.NewModelServiceClient(conn)
	pe.tf = &holdingMS{ModelService: pe.ms, hold: map[placement.Key]bool{}, asked: map[placement.Key]int{}}
	pe.s3 = pe.flaky(nil)
	pe.metrics = sdkmetric.NewManualReader()
	return pe
}

func (pe *placementEnv) config(cacheBytes int64) Config {
	cfg := pe.env.config()
	cfg.TFServingAddr, cfg.ModelConfigFile = "passthrough:///servingsim", pe.cfgFile
	cfg.ReloadTimeout = Duration(testwait.Timeout)
	cfg.Placement.Enabled, cfg.Placement.Host = true, testHost
	cfg.Placement.CacheBytes = cacheBytes
	cfg.Placement.PollInterval = Duration(50 * time.Millisecond)
	cfg.Placement.StatusInterval = Duration(300 * time.Millisecond)
	return cfg
}

func (pe *placementEnv) start(cfg Config) *sidecar {
	pe.t.Helper()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(pe.metrics))
	pe.t.Cleanup(func() { mp.Shutdown(context.Background()) })
	return pe.env.start(cfg, Deps{Meter: mp, Placement: PlacementDeps{Store: pe.store, TFServing: pe.tf,
		OnStatus: func(st placement.HostStatus, err error) {
			pe.mu.Lock()
			pe.statuses = append(pe.statuses, statusWrite{st, err})
			pe.mu.Unlock()
		}}})
}

// upload exports a servingsim model version, uploads it and notifies the queue.
func (pe *placementEnv) upload(t *testing.T, k placement.Key) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), k.String())
	if err := modelgen.Export(dir, modelgen.Spec{Kind: model.KindLinear, Seed: k.Version}); err != nil {
		t.Fatal(err)
	}
	pe.dirs[k] = dir
	pe.publish(k.Model, k.Version, dir, false)
}

func (pe *placementEnv) bytesOf(t *testing.T, k placement.Key) int64 {
	t.Helper()
	n, err := dirBytes(pe.dirs[k])
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// assign writes the host's assignment as the controller would.
func (pe *placementEnv) assign(t *testing.T, keys ...placement.Key) {
	t.Helper()
	ctx := context.Background()
	st, err := pe.store.ReadState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	es := make([]placement.Entry, len(keys))
	for i, k := range keys {
		es[i] = placement.Entry{Key: k, Bytes: 1, Since: time.Now()}
	}
	slices.SortFunc(es, func(a, b placement.Entry) int { return compareKeys(a.Key, b.Key) })
	a := placement.Assignment{Hosts: map[string]placement.HostAssignment{testHost: {Pool: placement.DefaultPoolName, Entries: es}}}
	if _, err := pe.store.WriteAssignment(ctx, "", a, st); err != nil {
		t.Fatalf("write assignment %v: %v", keys, err)
	}
}

// onDisk lists the published versions under the base path, sorted.
func (pe *placementEnv) onDisk(t *testing.T) []string {
	t.Helper()
	var out []string
	models, _ := os.ReadDir(pe.base)
	for _, m := range models {
		if !m.IsDir() || strings.HasPrefix(m.Name(), ".") {
			continue
		}
		vs, _ := os.ReadDir(filepath.Join(pe.base, m.Name()))
		for _, v := range vs {
			if _, err := strconv.ParseInt(v.Name(), 10, 64); err == nil && v.IsDir() {
				out = append(out, m.Name()+"@"+v.Name())
			}
		}
	}
	slices.Sort(out)
	return out
}

// configured is the model config file as model@version, sorted.
func (pe *placementEnv) configured(t *testing.T) []string {
	t.Helper()
	cfg, err := reload.ReadConfig(pe.cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mc := range cfg.GetModelConfigList().GetConfig() {
		for _, v := range mc.GetModelVersionPolicy().GetSpecific().GetVersions() {
			out = append(out, key(mc.GetName(), v).String())
		}
	}
	slices.Sort(out)
	return out
}

func (pe *placementEnv) state(k placement.Key) servingpb.ModelVersionStatus_State {
	st, err := pe.ms.GetModelStatus(context.Background(), &servingpb.GetModelStatusRequest{ModelSpec: &servingpb.ModelSpec{
		Name: k.Model, VersionChoice: &servingpb.ModelSpec_Version{Version: wrapperspb.Int64(k.Version)}}})
	if err != nil || len(st.GetModelVersionStatus()) != 1 {
		return servingpb.ModelVersionStatus_UNKNOWN
	}
	return st.GetModelVersionStatus()[0].GetState()
}

// waitExactly waits until disk, model config and servingsim all hold exactly
// want (config and AVAILABLE), with disk holding want plus cached.
func (pe *placementEnv) waitExactly(t *testing.T, want []placement.Key, cached ...placement.Key) {
	t.Helper()
	var ws, ds []string
	for _, k := range want {
		ws = append(ws, k.String())
	}
	ds = append(ds, ws...)
	for _, k := range cached {
		ds = append(ds, k.String())
	}
	slices.Sort(ws)
	slices.Sort(ds)
	testwait.UntilNil(t, fmt.Sprintf("disk %v, config and AVAILABLE %v", ds, ws), func() error {
		if got := pe.onDisk(t); !slices.Equal(got, ds) {
			return fmt.Errorf("on disk %v", got)
		}
		if got := pe.configured(t); !slices.Equal(got, ws) {
			return fmt.Errorf("model config %v", got)
		}
		for _, k := range want {
			if s := pe.state(k); s != servingpb.ModelVersionStatus_AVAILABLE {
				return fmt.Errorf("%s is %v", k, s)
			}
		}
		return nil
	})
}

// status waits for a successful status write that satisfies ok and returns it.
func (pe *placementEnv) status(t *testing.T, what string, ok func(placement.HostStatus) bool) placement.HostStatus {
	t.Helper()
	var got placement.HostStatus
	testwait.UntilNil(t, "host status in KV: "+what, func() error {
		r, err := pe.store.ReadReports(context.Background())
		if err != nil {
			return err
		}
		st, found := r.Status[testHost]
		if !found || !ok(st) {
			return fmt.Errorf("status %+v", st)
		}
		got = st
		return nil
	})
	return got
}

// writes counts status writes so far that failed and that succeeded.
func (pe *placementEnv) writes() (failed, ok int) {
	pe.mu.Lock()
	defer pe.mu.Unlock()
	for _, w := range pe.statuses {
		if w.err != nil {
			failed++
		} else {
			ok++
		}
	}
	return failed, ok
}

func resident(st placement.HostStatus) []string {
	var out []string
	for _, v := range st.Resident {
		out = append(out, key(v.Model, v.Version).String())
	}
	return out
}

func ignoredWith(reason string) func(journal.Entry) bool {
	return func(e journal.Entry) bool { return e.Outcome == journal.Ignored && strings.Contains(e.Reason, reason) }
}

// holdingMS is servingsim's ModelService, except that versions on hold are
// reported AVAILABLE (a slow unload) and the per-version questions about them
// are counted: the sidecar asks one right before deleting a version's files.
type holdingMS struct {
	ModelService
	mu      sync.Mutex
	hold    map[placement.Key]bool
	asked   map[placement.Key]int
	gate    chan struct{}
	blocked int
}

func (h *holdingMS) GetModelStatus(ctx context.Context, in *servingpb.GetModelStatusRequest, opts ...grpc.CallOption) (*servingpb.GetModelStatusResponse, error) {
	resp, err := h.ModelService.GetModelStatus(ctx, in, opts...)
	h.mu.Lock()
	defer h.mu.Unlock()
	for k := range h.hold {
		if k.Model != in.GetModelSpec().GetName() {
			continue
		}
		if v := in.GetModelSpec().GetVersion(); v != nil {
			if v.GetValue() != k.Version {
				continue
			}
			h.asked[k]++
		}
		out := &servingpb.GetModelStatusResponse{}
		if err == nil {
			out = proto.Clone(resp).(*servingpb.GetModelStatusResponse)
		}
		out.ModelVersionStatus = slices.DeleteFunc(out.ModelVersionStatus, func(s *servingpb.ModelVersionStatus) bool { return s.GetVersion() == k.Version })
		out.ModelVersionStatus = append(out.ModelVersionStatus, &servingpb.ModelVersionStatus{Version: k.Version, State: servingpb.ModelVersionStatus_AVAILABLE})
		resp, err = out, nil
	}
	return resp, err
}

// HandleReloadConfigRequest waits, while a gate is set, until it opens: a
// reload that TF Serving keeps blocked (a load that takes long).
func (h *holdingMS) HandleReloadConfigRequest(ctx context.Context, in *servingpb.ReloadConfigRequest, opts ...grpc.CallOption) (*servingpb.ReloadConfigResponse, error) {
	h.mu.Lock()
	gate := h.gate
	if gate != nil {
		h.blocked++
	}
	h.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return h.ModelService.HandleReloadConfigRequest(ctx, in, opts...)
}

func (h *holdingMS) setGate(gate chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.gate = gate
}

func (h *holdingMS) blockedReloads() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.blocked
}

func (h *holdingMS) setHold(k placement.Key, on bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if on {
		h.hold[k], h.asked[k] = true, 0
	} else {
		delete(h.hold, k)
	}
}

func (h *holdingMS) askedAbout(k placement.Key) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.asked[k]
}

// TestPlacementSyncsTheAssignment: against a real Consul agent, the S3 server
// (behind a GET-counting proxy), SQS and servingsim, the sidecar holds exactly
// its host's assignment on disk, in the model config and loaded; notifications
// for anything else are acknowledged and skipped; an unassigned version stays
// in the disk cache and a re-assignment loads it without an S3 GET; past the
// cache's bytes the least recently used go; status is in KV.
func TestPlacementSyncsTheAssignment(t *testing.T) {
	pe := newPlacementEnv(t)
	a1, a2, b1, c1, c2 := key("a", 1), key("a", 2), key("b", 1), key("c", 1), key("c", 2)

	// Notifications before any assignment: acknowledged, nothing published.
	for _, k := range []placement.Key{a1, a2, b1, c1} {
		pe.upload(t, k)
	}
	cache := max(pe.bytesOf(t, a2), pe.bytesOf(t, b1)) // room for one of them
	cfg := pe.config(cache)
	cfg.CatchUp, cfg.CatchUpInterval = true, 0 // in placement mode: writes the catalog
	sc := pe.start(cfg)
	sc.wait(t, 4, ignoredWith("no assignment known"))
	pe.queueEmpty()
	if got := pe.onDisk(t); len(got) != 0 {
		t.Fatalf("published without an assignment: %v", got)
	}

	// The catalog lists every version in the bucket with its object size.
	testwait.UntilNil(t, "the catalog in KV", func() error {
		vs, _, err := pe.store.ReadCatalog(context.Background())
		if err != nil || len(vs) != 4 {
			return fmt.Errorf("catalog %v, %v", vs, err)
		}
		for _, v := range vs {
			if v.ObjectBytes <= 0 {
				return fmt.Errorf("catalog entry without a size: %+v", v)
			}
		}
		return nil
	})

	// An assignment: exactly it is fetched, configured, loaded and reported.
	pe.assign(t, a2, b1)
	pe.waitExactly(t, []placement.Key{a2, b1})
	if n := pe.s3.gets.Load(); n != 2 {
		t.Errorf("%d S3 GETs for 2 assigned versions", n)
	}
	st := pe.status(t, "a@2 and b@1 resident", func(st placement.HostStatus) bool {
		return slices.Equal(resident(st), []string{"a@2", "b@1"})
	})
	if want := pe.bytesOf(t, a2) + pe.bytesOf(t, b1); st.DiskBytes != want || st.Pool != placement.DefaultPoolName {
		t.Errorf("status %+v: want disk bytes %d, pool default", st, want)
	}

	// A notification for a version not assigned here: acknowledged, skipped.
	pe.upload(t, c2)
	sc.wait(t, 1, ignoredWith("not assigned to host "+testHost))
	pe.queueEmpty()
	// ... and, new to the catalog, listed into it at once (catch-up's interval is
	// 0 here: no timer would ever list it), so the controller can place it.
	testwait.UntilNil(t, "c@2 in the catalog after its notification", func() error {
		vs, _, err := pe.store.ReadCatalog(context.Background())
		if err != nil || !slices.ContainsFunc(vs, func(v placement.Version) bool { return v.Key == c2 }) {
			return fmt.Errorf("catalog %v, %v", vs, err)
		}
		return nil
	})

	// b@1 unassigned, a@1 assigned: b@1 unloads but stays cached on disk.
	pe.assign(t, a1, a2)
	pe.waitExactly(t, []placement.Key{a1, a2}, b1)
	st = pe.status(t, "a@1 and a@2 resident, b@1 cached", func(st placement.HostStatus) bool {
		return slices.Equal(resident(st), []string{"a@1", "a@2"}) && len(st.Cached) == 1
	})
	if c := st.Cached[0]; c.Model != "b" || c.Version != 1 || c.Bytes != pe.bytesOf(t, b1) {
		t.Errorf("status cached %+v, want b@1 with its %d disk bytes", st.Cached, pe.bytesOf(t, b1))
	}
	if s := pe.state(b1); s != servingpb.ModelVersionStatus_END {
		t.Errorf("unassigned b@1 is %v in servingsim, want END", s)
	}
	if got := pe.onDisk(t); !slices.Contains(got, "b@1") {
		t.Errorf("b@1 left the disk cache although it fits (%d bytes): %v", cache, got)
	}

	// b@1 placed back: loaded from the cache, no S3 GET.
	gets := pe.s3.gets.Load()
	pe.assign(t, a1, a2, b1)
	pe.waitExactly(t, []placement.Key{a1, a2, b1})
	pe.status(t, "b@1 resident again, nothing cached", func(st placement.HostStatus) bool {
		return slices.Contains(resident(st), "b@1") && len(st.Cached) == 0
	})
	if n := pe.s3.gets.Load(); n != gets {
		t.Errorf("re-assigning a cached version made %d S3 GETs", n-gets)
	}

	// a@2 and b@1 unassigned: the cache holds one; the other is removed once unloaded.
	pe.assign(t, a1)
	pe.waitExactly(t, []placement.Key{a1}, b1) // equal last use: a@2 goes first (key order)
	pe.status(t, "only a@1 resident", func(st placement.HostStatus) bool { return slices.Equal(resident(st), []string{"a@1"}) })
	assertNoTemp(t, pe.base)
	for _, en := range sc.snapshot() {
		if en.Model == "c" && en.Outcome != journal.Ignored {
			t.Errorf("unassigned model c: %+v", en)
		}
	}
}

// TestPlacementRemovesOnlyUnloaded: an unassigned version's files stay while TF
// Serving reports it loaded, and go once it reports it unloaded; with Consul
// unreachable, and after it comes back empty, the host keeps its last
// assignment; a new assignment after that is followed.
func TestPlacementRemovesOnlyUnloaded(t *testing.T) {
	pe := newPlacementEnv(t)
	a1, b1 := key("a", 1), key("b", 1)
	pe.upload(t, a1)
	pe.upload(t, b1)
	pe.start(pe.config(0))
	pe.assign(t, a1, b1)
	pe.waitExactly(t, []placement.Key{a1, b1})

	// TF Serving "still has" b@1 loaded: asked twice before deleting, it stays.
	pe.tf.setHold(b1, true)
	pe.assign(t, a1)
	testwait.Until(t, "the sidecar asking twice whether b@1 is unloaded", func() bool {
		return pe.tf.askedAbout(b1) >= 2 || !slices.Contains(pe.onDisk(t), "b@1")
	})
	if got := pe.onDisk(t); !slices.Contains(got, "b@1") {
		t.Fatalf("b@1 deleted while TF Serving reported it loaded: %v", got)
	}
	pe.tf.setHold(b1, false)
	pe.waitExactly(t, []placement.Key{a1})
	pe.status(t, "only a@1 resident", func(st placement.HostStatus) bool { return slices.Equal(resident(st), []string{"a@1"}) })
	if got := pe.metricSums(t); got["modelsync.placement.removed"] != 1 || got["modelsync.placement.versions/assigned"] != 1 ||
		got["modelsync.placement.versions/available"] != 1 || got["modelsync.placement.disk/cached"] != 0 || got["modelsync.placement.reloads/ok"] < 2 {
		t.Errorf("placement metrics %v", got)
	}

	// Consul goes away: the status writes fail, the host keeps a@1.
	pe.consul.Stop(t)
	_, okBefore := pe.writes()
	testwait.Until(t, "two failed status writes", func() bool { f, _ := pe.writes(); return f >= 2 })
	pe.waitExactly(t, []placement.Key{a1})
	// Back, empty (a dev agent keeps no data): no assignment is not an empty one.
	pe.consul.Start(t)
	testwait.Until(t, "two more successful status writes", func() bool { _, ok := pe.writes(); return ok >= okBefore+2 })
	pe.waitExactly(t, []placement.Key{a1})

	// A new assignment is followed again.
	pe.assign(t, b1)
	pe.waitExactly(t, []placement.Key{b1})

	// A reload that does not return (TF Serving loading a large model) stops
	// neither the status heartbeat nor fetching.
	c1 := key("c", 1)
	pe.upload(t, c1)
	gate := make(chan struct{})
	pe.tf.setGate(gate)
	pe.assign(t, b1, c1)
	testwait.Until(t, "a reload blocked in TF Serving", func() bool { return pe.tf.blockedReloads() >= 1 })
	_, okNow := pe.writes()
	testwait.Until(t, "two status writes during the blocked reload", func() bool { _, ok := pe.writes(); return ok >= okNow+2 })
	if pe.tf.blockedReloads() != 1 || !slices.Contains(pe.onDisk(t), "c@1") {
		t.Fatalf("during the blocked reload: %d reloads sent, disk %v; want one, c@1 fetched", pe.tf.blockedReloads(), pe.onDisk(t))
	}
	pe.tf.setGate(nil)
	close(gate)
	pe.waitExactly(t, []placement.Key{b1, c1})
	pe.assign(t, b1)
	pe.waitExactly(t, []placement.Key{b1})

	// A version TF Serving cannot load is reported as a failure with the reason;
	// the rest keeps serving.
	bad := key("bad", 1)
	pe.publish(bad.Model, bad.Version, modelDir(t, bad.Model, bad.Version, 1), false)
	pe.assign(t, b1, bad)
	st := pe.status(t, "bad@1 failed", func(st placement.HostStatus) bool { return len(st.Failures) == 1 })
	if f := st.Failures[0]; f.Model != "bad" || f.Version != 1 || !strings.Contains(f.Reason, "load failed") || !f.Until.After(f.At) {
		t.Errorf("failure %+v: want bad@1, load failed, a backoff", f)
	}
	if got := resident(st); !slices.Equal(got, []string{"b@1"}) {
		t.Errorf("resident %v, want [b@1]", got)
	}
}

func TestPlacementConfigValidate(t *testing.T) {
	valid := func() Config {
		c := validConfig()
		c.Placement.Enabled, c.Placement.Host = true, "h1"
		c.TFServingAddr, c.ModelConfigFile = "localhost:8500", "/models.config"
		return c
	}
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string
	}{
		{name: "valid", mutate: func(*Config) {}},
		{name: "off: nothing checked", mutate: func(c *Config) { c.Placement = PlacementConfig{} }},
		{name: "no host", mutate: func(c *Config) { c.Placement.Host = "" }, wantErr: "host is required"},
		{name: "no TF Serving", mutate: func(c *Config) { c.TFServingAddr = "" }, wantErr: "tfserving_addr and model_config_file are required"},
		{name: "retention", mutate: func(c *Config) { c.Retain = 2 }, wantErr: "retention must be 0"},
		{name: "gateway mode", mutate: func(c *Config) { c.Mode = ModeGateway; c.TFServingAddr = "" }, wantErr: "needs mode"},
		{name: "negative cache", mutate: func(c *Config) { c.Placement.CacheBytes = -1 }, wantErr: "cache_bytes"},
		{name: "negative unload delay", mutate: func(c *Config) { c.Placement.UnloadDelay = -1 }, wantErr: "unload_delay"},
		{name: "no unload delay is fine", mutate: func(c *Config) { c.Placement.UnloadDelay = 0 }},
		{name: "slash in pool", mutate: func(c *Config) { c.Placement.Pool = "a/b" }, wantErr: "KV path segments"},
		{name: "no queue is fine", mutate: func(c *Config) { c.QueueURL, c.CatchUp = "", false }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.mutate(&c)
			err := c.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("Validate() = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestLayoutModelPrefixes(t *testing.T) {
	tests := []struct {
		name    string
		prefix  string
		layouts []string
		model   string
		want    []string
	}{
		{name: "defaults share one prefix", prefix: "models", layouts: DefaultLayouts, model: "ctr", want: []string{"models/ctr/"}},
		{name: "no prefix", layouts: DefaultLayouts, model: "ctr", want: []string{"ctr/"}},
		{name: "flat layout", prefix: "p", layouts: []string{"{prefix}/{model}-v{version}.tgz"}, model: "m", want: []string{"p/m-v"}},
		{name: "version first lists the prefix", prefix: "p", layouts: []string{"{prefix}/{version}/{model}.tar.gz"}, model: "m", want: []string{"p/"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := NewLayout(tc.prefix, tc.layouts)
			if err != nil {
				t.Fatal(err)
			}
			if got := l.modelPrefixes(tc.model); !slices.Equal(got, tc.want) {
				t.Errorf("modelPrefixes(%q) = %q, want %q", tc.model, got, tc.want)
			}
		})
	}
}

// TestPlacementConsulDownAtStartup: a sidecar that starts while Consul cannot be
// reached knows no assignment; it deletes nothing, leaves TF Serving's config
// alone, and acknowledges notifications without publishing.
func TestPlacementConsulDownAtStartup(t *testing.T) {
	pe := newPlacementEnv(t)
	if err := modelgen.Export(filepath.Join(pe.base, "a", "1"), modelgen.Spec{Kind: model.KindLinear}); err != nil {
		t.Fatal(err)
	}
	cfgBefore := "model_config_list { config { name: \"a\" base_path: \"" + filepath.Join(pe.base, "a") + "\" model_platform: \"tensorflow\" } }\n"
	if err := os.WriteFile(pe.cfgFile, []byte(cfgBefore), 0o644); err != nil {
		t.Fatal(err)
	}
	pe.consul.Stop(t)
	cfg := pe.config(0)
	sc := pe.start(cfg)
	pe.upload(t, key("b", 1))
	sc.wait(t, 1, ignoredWith("no assignment known"))
	testwait.Until(t, "two failed status writes", func() bool { f, _ := pe.writes(); return f >= 2 })
	if got := pe.onDisk(t); !slices.Equal(got, []string{"a@1"}) {
		t.Errorf("on disk %v, want [a@1] untouched", got)
	}
	if b, _ := os.ReadFile(pe.cfgFile); string(b) != cfgBefore {
		t.Errorf("model config rewritten without an assignment:\n%s", b)
	}
	pe.queueEmpty()
}

// metricSums reads the sidecar's placement metrics as name[/state-or-kind-or-outcome] -> value.
func (pe *placementEnv) metricSums(t *testing.T) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := pe.metrics.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	name := func(n string, attrs attribute.Set) string {
		for _, k := range []attribute.Key{"state", "kind", "outcome"} {
			if v, ok := attrs.Value(k); ok {
				return n + "/" + v.AsString()
			}
		}
		return n
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					out[name(m.Name, dp.Attributes)] += dp.Value
				}
			case metricdata.Gauge[int64]:
				for _, dp := range d.DataPoints {
					out[name(m.Name, dp.Attributes)] = dp.Value
				}
			}
		}
	}
	return out
}

// TestPlacementDrainsBeforeUnload: a version taken off the host stays in TF
// Serving's config, AVAILABLE, for the unload delay (an hour here), so gateways
// stop routing it before it goes; a version then added to the config cuts the
// drain short (its load may need the memory), and the drained one unloads.
func TestPlacementDrainsBeforeUnload(t *testing.T) {
	pe := newPlacementEnv(t)
	a1, b1, c1 := key("a", 1), key("b", 1), key("c", 1)
	for _, k := range []placement.Key{a1, b1, c1} {
		pe.upload(t, k)
	}
	cfg := pe.config(1 << 30)
	cfg.Placement.UnloadDelay = Duration(time.Hour)
	sc := pe.start(cfg)
	sc.wait(t, 3, ignoredWith("no assignment known"))
	pe.assign(t, a1, b1)
	pe.waitExactly(t, []placement.Key{a1, b1})

	// b@1 unassigned: the sidecar reports one version assigned, and b@1 is still
	// configured and AVAILABLE (draining).
	pe.assign(t, a1)
	testwait.Until(t, "the sidecar to report one assigned version", func() bool {
		return pe.metricSums(t)["modelsync.placement.versions/assigned"] == 1
	})
	if got := pe.configured(t); !slices.Equal(got, []string{"a@1", "b@1"}) {
		t.Errorf("configured %v right after b@1 was unassigned; want a@1 and b@1 (draining)", got)
	}
	if st := pe.state(b1); st != servingpb.ModelVersionStatus_AVAILABLE {
		t.Errorf("b@1 %v while draining; want AVAILABLE", st)
	}

	// c@1 assigned: its load cuts the drain short; b@1 unloads, stays cached.
	pe.assign(t, a1, c1)
	pe.waitExactly(t, []placement.Key{a1, c1}, b1)
}

// TestPlacementFetchesThroughOneSlot: an assignment larger than max_in_flight is
// fetched a slot at a time, each finished fetch starting the next.
func TestPlacementFetchesThroughOneSlot(t *testing.T) {
	pe := newPlacementEnv(t)
	var keys []placement.Key
	for _, m := range []string{"a", "b", "c", "d"} {
		keys = append(keys, key(m, 1))
		pe.upload(t, key(m, 1))
	}
	cfg := pe.config(0)
	cfg.QueueURL, cfg.MaxInFlight, cfg.Concurrency = "", 1, 1
	cfg.Placement.StatusInterval = Duration(time.Hour) // only finished fetches wake the loop
	pe.start(cfg)
	pe.assign(t, keys...)
	pe.waitExactly(t, keys)
	if n := pe.s3.gets.Load(); n != int64(len(keys)) {
		t.Errorf("%d S3 GETs for %d versions", n, len(keys))
	}
}
