package gateway

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tfgate/tfgate/internal/testwait"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

func expRoutes(name string, arms ...string) string {
	var b strings.Builder
	b.WriteString("  reviews:\n    default: stable\n    labels: {stable: 1}\n    experiment:\n      name: " + name + "\n      arms:\n")
	for _, a := range arms {
		b.WriteString("        - " + a + "\n")
	}
	b.WriteString("  churn:\n    default: \"1\"\n")
	return b.String()
}

func TestExperimentOverTheWire(t *testing.T) {
	s := startStack(t, stackOpts{versions: []int64{1, 2}, routes: expRoutes("e", "{name: control, version: 1, weight: 90}", "{name: treatment, version: 2, weight: 10}")})
	s.waitRoutable("reviews", 2)
	req := func(key string) *tfgatev1.PredictRequest {
		return &tfgatev1.PredictRequest{Model: "reviews", RoutingKey: key, Instances: text("fine")}
	}
	want := map[string]int64{"control": 1, "treatment": 2}

	// Keyless: 2,000 requests through the wire (the 20,000-request ±1 point check
	// runs on the resolver with a seeded RNG in package route).
	const n = 2000
	counts := map[string]int{}
	for i := 0; i < n; i++ {
		resp, err := s.client.Predict(context.Background(), req(""))
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetVersion() != want[resp.GetArm()] || resp.GetExperiment() != "e" || resp.GetRoute() != tfgatev1.RouteKind_ROUTE_KIND_EXPERIMENT {
			t.Fatalf("response arm %q experiment %q version %d route %v; want the arm's version %d", resp.GetArm(), resp.GetExperiment(), resp.GetVersion(), resp.GetRoute(), want[resp.GetArm()])
		}
		counts[resp.GetArm()]++
	}
	if pct := float64(counts["control"]) / n * 100; math.Abs(pct-90) > 3 {
		t.Errorf("control got %.1f%% of %d keyless requests, want 90 +- 3", pct, n)
	}

	// Sticky: a key gets the same arm on every call.
	for i := 0; i < 20; i++ {
		key := fmt.Sprintf("customer-%d", i)
		first := ""
		for j := 0; j < 5; j++ {
			resp, err := s.client.Predict(context.Background(), req(key))
			if err != nil {
				t.Fatal(err)
			}
			if first == "" {
				first = resp.GetArm()
			} else if resp.GetArm() != first {
				t.Fatalf("key %q got arm %q then %q", key, first, resp.GetArm())
			}
		}
	}

	lr, err := s.client.ListRoutes(context.Background(), &tfgatev1.ListRoutesRequest{Model: "reviews"})
	if err != nil {
		t.Fatal(err)
	}
	x := lr.GetModels()[0].GetExperiment()
	if x.GetName() != "e" || len(x.GetArms()) != 2 || math.Abs(x.GetArms()[0].GetEffectiveShare()-0.9) > 1e-9 || !x.GetArms()[1].GetRoutable() {
		t.Errorf("ListRoutes experiment = %v, want e with control 0.9 and treatment routable", x)
	}
}

// TestUnreadyArmGivesWayAndSaysWhy: an arm whose version has a spec on disk but
// is AVAILABLE on no host gets no traffic; ListRoutes says why; explicit requests
// for it fail with NOT_FOUND.
func TestUnreadyArmGivesWayAndSaysWhy(t *testing.T) {
	s := startStack(t, stackOpts{versions: []int64{1, 2, 3}, servedVersions: []int64{1, 2}, routes: expRoutes("e",
		"{name: a, version: 1, weight: 50}", "{name: b, version: 2, weight: 25}", "{name: c, version: 3, weight: 25}")})
	s.waitRoutable("reviews", 2)
	for i := 0; i < 300; i++ {
		resp, err := s.client.Predict(context.Background(), &tfgatev1.PredictRequest{Model: "reviews", RoutingKey: fmt.Sprint(i), Instances: text("x")})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetVersion() == 3 || resp.GetArm() == "c" {
			t.Fatalf("key %d routed to arm %q version %d, which no host has AVAILABLE", i, resp.GetArm(), resp.GetVersion())
		}
	}
	lr, err := s.client.ListRoutes(context.Background(), &tfgatev1.ListRoutesRequest{Model: "reviews"})
	if err != nil {
		t.Fatal(err)
	}
	arms := lr.GetModels()[0].GetExperiment().GetArms()
	if c := arms[2]; c.GetRoutable() || c.GetEffectiveShare() != 0 || !strings.Contains(c.GetReason(), "reports it AVAILABLE") {
		t.Errorf("arm c = %v, want not routable, no share, reason naming AVAILABLE", c)
	}
	if a := arms[0]; math.Abs(a.GetEffectiveShare()-2.0/3) > 1e-3 {
		t.Errorf("arm a effective share = %v, want 2/3 after c gave its share away", a.GetEffectiveShare())
	}
	var v3 *tfgatev1.VersionState
	for _, v := range lr.GetModels()[0].GetVersions() {
		if v.GetVersion() == 3 {
			v3 = v
		}
	}
	if v3 == nil || v3.GetRoutable() || len(v3.GetHosts()) != 0 {
		t.Errorf("version 3 state = %v, want listed, not routable, no hosts", v3)
	}
	_, err = s.client.Predict(context.Background(), &tfgatev1.PredictRequest{Model: "reviews", Target: &tfgatev1.PredictRequest_Version{Version: 3}, RawInputs: rawText(t, make([]int64, 16), make([]int64, 16))})
	if status.Code(err) != codes.NotFound || !contains(err, "version 3") {
		t.Errorf("explicit raw request to version 3 = %v, want NOT_FOUND naming version 3", err)
	}
	_, err = s.client.Predict(context.Background(), &tfgatev1.PredictRequest{Model: "reviews", Target: &tfgatev1.PredictRequest_Version{Version: 3}, Instances: text("x")})
	if status.Code(err) != codes.NotFound || !contains(err, "version 3: version not served: its spec is loaded, but no host in pools [main] reports it AVAILABLE") {
		t.Errorf("explicit typed request to version 3 = %v, want NOT_FOUND saying no host has it", err)
	}
}

// TestReloadsUnderTraffic: 100 config reloads while clients keep calling; no call
// fails and every response's version is the one its arm names. Arm names carry
// their version ("v1-..."), and every other config swaps which arm has which
// version, so a request mixing two snapshots would show up. Then a broken config
// changes nothing.
func TestReloadsUnderTraffic(t *testing.T) {
	cfgFor := func(i int) string {
		if i%2 == 0 {
			return expRoutes(fmt.Sprintf("e%d", i), fmt.Sprintf("{name: v1-gen%d, version: 1, weight: %d}", i, 10+i%80), fmt.Sprintf("{name: v2-gen%d, version: 2, weight: 50}", i))
		}
		return expRoutes(fmt.Sprintf("e%d", i), fmt.Sprintf("{name: v2-gen%d, version: 2, weight: %d}", i, 10+i%80), fmt.Sprintf("{name: v1-gen%d, version: 1, weight: 50}", i))
	}
	s := startStack(t, stackOpts{versions: []int64{1, 2}, routes: cfgFor(0)})
	s.waitRoutable("reviews", 2)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var ok, failed atomic.Int64
	var firstErr atomic.Pointer[string]
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				key := ""
				if i%2 == 0 {
					key = fmt.Sprintf("w%d-%d", w, i)
				}
				resp, err := s.client.Predict(context.Background(), &tfgatev1.PredictRequest{Model: "reviews", RoutingKey: key, Instances: text("steady traffic")})
				if err == nil && !strings.HasPrefix(resp.GetArm(), fmt.Sprintf("v%d-", resp.GetVersion())) {
					err = fmt.Errorf("arm %q served version %d", resp.GetArm(), resp.GetVersion())
				}
				if err != nil {
					failed.Add(1)
					msg := err.Error()
					firstErr.CompareAndSwap(nil, &msg)
					continue
				}
				ok.Add(1)
			}
		}(w)
	}
	gen0 := s.srv.Generation()
	for i := 1; i <= 100; i++ {
		s.writeRoutes(cfgFor(i))
		s.waitGeneration(gen0 + uint64(i))
	}
	// A broken config: the last good one keeps serving.
	before := s.srv.Stats().ReloadFailures
	s.writeRoutes(expRoutes("broken", "{name: a, version: 1, weight: -5}", "{name: a, version: two, weight: 1}"))
	testwait.Until(t, "the broken config to be rejected", func() bool { return s.srv.Stats().ReloadFailures != before })
	// Traffic keeps flowing on the old config.
	served := ok.Load() + failed.Load()
	testwait.Until(t, "requests answered after the broken config", func() bool { return ok.Load()+failed.Load() >= served+20 })
	cancel()
	wg.Wait()

	if f := failed.Load(); f != 0 {
		t.Errorf("%d of %d requests failed during 100 reloads; first: %s", f, f+ok.Load(), *firstErr.Load())
	}
	if ok.Load() < 100 {
		t.Errorf("only %d requests succeeded during the reloads; the test needs traffic", ok.Load())
	}
	st := s.srv.Stats()
	if st.ReloadFailures != before+1 {
		t.Errorf("reload failures = %d, want %d", st.ReloadFailures, before+1)
	}
	if g := s.srv.Generation(); g != gen0+100 {
		t.Errorf("generation after the broken config = %d, want %d (unchanged)", g, gen0+100)
	}
	lr, err := s.client.ListRoutes(context.Background(), &tfgatev1.ListRoutesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(lr.GetLastReloadError(), `experiment "broken" arm "a": weight -5 is negative`) || !strings.Contains(lr.GetLastReloadError(), "duplicate arm name") {
		t.Errorf("ListRoutes last_reload_error = %q, want every problem of the broken file", lr.GetLastReloadError())
	}
	resp, err := s.client.Predict(context.Background(), &tfgatev1.PredictRequest{Model: "reviews", Instances: text("after")})
	if err != nil || resp.GetExperiment() != "e100" {
		t.Errorf("after the broken config, Predict = %v, %v; want experiment e100 still serving", resp, err)
	}
	t.Logf("%d requests across 100 reloads, none failed", ok.Load())
}

func TestSIGHUPStyleReload(t *testing.T) {
	s := startStack(t, stackOpts{})
	// Reload (what SIGHUP calls) with an unchanged file is a successful reload.
	g := s.srv.Generation()
	if err := s.srv.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if s.srv.Generation() != g+1 {
		t.Errorf("generation after Reload = %d, want %d", s.srv.Generation(), g+1)
	}

	// Rewriting the same content (a new file, a new mtime) is not a reload: the
	// watcher compares content hashes. Once it has read the new file, it would
	// have reloaded in the same step.
	s.writeRoutes(defaultRoutes)
	fi, err := os.Stat(s.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, "the watcher to read the rewritten file", func() bool { return s.srv.builder.hasRead(fi) })
	if s.srv.Generation() != g+1 {
		t.Errorf("generation after rewriting identical content = %d, want %d", s.srv.Generation(), g+1)
	}

	// An arm on a version without a preprocessing spec is rejected as a whole.
	failures := s.srv.Stats().ReloadFailures
	s.writeRoutes(expRoutes("e", "{name: a, version: 1, weight: 1}", "{name: ghost, version: 9, weight: 1}"))
	testwait.Until(t, "the config with a ghost arm to be rejected", func() bool { return s.srv.Stats().ReloadFailures != failures })
	lr, err := s.client.ListRoutes(context.Background(), &tfgatev1.ListRoutesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if want := `experiment "e" arm "ghost": version 9 has no usable preprocessing spec`; !strings.Contains(lr.GetLastReloadError(), want) || lr.GetConfigGeneration() != g+1 {
		t.Errorf("after a config with an arm on a version without spec: generation %d, last error %q; want generation %d and an error containing %q", lr.GetConfigGeneration(), lr.GetLastReloadError(), g+1, want)
	}
}

// TestNewVersionBecomesRoutable: a version published while the gateway runs
// (written under a temporary name and renamed into place, as modelsync does) is
// picked up by servingsim and the spec store, signature-checked, listed as
// routable, and then takes arm traffic once the config names it.
func TestNewVersionBecomesRoutable(t *testing.T) {
	s := startStack(t, stackOpts{versions: []int64{1}, routes: "  reviews: {default: stable, labels: {stable: 1}}\n  churn: {default: \"1\"}\n"})
	tmp := filepath.Join(s.root, "reviews", "tmp-3")
	writeVersionsAt(t, tmp, 3)
	if err := os.Rename(tmp, filepath.Join(s.root, "reviews", "3")); err != nil {
		t.Fatal(err)
	}
	s.waitRoutable("reviews", 3)
	g := s.srv.Generation()
	s.writeRoutes(expRoutes("rollout", "{name: old, version: 1, weight: 0}", "{name: new, version: 3, weight: 1}"))
	s.waitGeneration(g + 1)
	resp, err := s.client.Predict(context.Background(), &tfgatev1.PredictRequest{Model: "reviews", Instances: text("fresh")})
	if err != nil || resp.GetVersion() != 3 || resp.GetArm() != "new" {
		t.Fatalf("Predict after publishing version 3 = %v, %v; want arm new on version 3", resp, err)
	}
	if c := s.recorder.last(); c.version != 3 {
		t.Errorf("backend call pinned version %d, want 3", c.version)
	}
}
