package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tfgate/tfgate/gateway/exposure"
	"github.com/tfgate/tfgate/gateway/split"
	"github.com/tfgate/tfgate/internal/testwait"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// failMarked fails the backend call of every request whose caller sent the
// metadata x-test-fail (the backend call runs on the handler's context).
type failMarked struct{ Backends }

func (f failMarked) Predict(ctx context.Context, pools []string, req *servingpb.PredictRequest) (*servingpb.PredictResponse, string, error) {
	if md, _ := metadata.FromIncomingContext(ctx); len(md.Get("x-test-fail")) > 0 {
		return nil, "", status.Error(codes.Unavailable, "injected backend failure")
	}
	return f.Backends.Predict(ctx, pools, req)
}

// exposureLine is one record as the exposure log writes it.
type exposureLine struct {
	Model, Experiment, Arm, Route, Key, Code, Label string
	Version                                         int64
	LatencyMS                                       float64 `json:"latency_ms"`
}

func readExposures(t *testing.T, path string) []exposureLine {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []exposureLine
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l exposureLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("exposure line %q: %v", sc.Text(), err)
		}
		out = append(out, l)
	}
	return out
}

// Every Predict that resolved a version leaves exactly one record naming what
// the response named, successes and failures alike, under concurrency; a
// request that resolved nothing leaves none; Run's shutdown flushes the log.
func TestExposureOnePerRoutedRequest(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "exposure.jsonl")
	s := startStack(t, stackOpts{
		versions: []int64{1, 2, 3},
		// Half the routed requests are shadowed to version 3: a shadow writes no record.
		routes: strings.Replace(expRoutes("e", "{name: control, version: 1, weight: 90}", "{name: treatment, version: 2, weight: 10}"),
			"labels: {stable: 1}\n", "labels: {stable: 1}\n    shadow: {version: 3, percent: 50}\n", 1),
		wrap: func(b Backends) Backends { return failMarked{b} },
		run: func(rc *RunConfig, d *Deps) {
			rc.Exposure = &exposure.Config{Path: logPath}
		},
	})
	s.waitRoutable("reviews", 3)

	type want struct {
		arm, route string
		version    int64
		code       codes.Code
	}
	const n = 2000
	var mu sync.Mutex
	wants := map[string]want{} // by routing key
	var wg sync.WaitGroup
	work := make(chan int)
	for g := 0; g < 16; g++ {
		wg.Go(func() {
			for i := range work {
				key := fmt.Sprintf("k-%d", i)
				req := &tfgatev1.PredictRequest{Model: "reviews", RoutingKey: key, Instances: text("fine")}
				ctx := context.Background()
				switch i % 10 {
				case 1: // fails at the backend, after resolving
					key = "fail-" + key
					req.RoutingKey = key
					ctx = metadata.AppendToOutgoingContext(ctx, "x-test-fail", "1")
				case 2: // pinned version
					req.Target = &tfgatev1.PredictRequest_Version{Version: 2}
				case 3: // label
					req.Target = &tfgatev1.PredictRequest_Label{Label: "stable"}
				case 4: // resolves nothing: no record
					req.Model = "nope"
				}
				resp, err := s.client.Predict(ctx, req)
				w := want{code: status.Code(err)}
				if err == nil {
					w.arm, w.version = resp.GetArm(), resp.GetVersion()
					w.route = strings.ToLower(strings.TrimPrefix(resp.GetRoute().String(), "ROUTE_KIND_"))
				}
				mu.Lock()
				if i%10 != 4 {
					wants[key] = w
				}
				mu.Unlock()
			}
		})
	}
	for i := 0; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	testwait.Until(t, "the shadows to finish", func() bool {
		lr, err := s.client.ListRoutes(context.Background(), &tfgatev1.ListRoutesRequest{Model: "reviews"})
		var n uint64
		for _, c := range lr.GetModels()[0].GetShadow().GetComparisons() {
			n += c.GetRequests() + c.GetFailed() + c.GetShed()
		}
		return err == nil && n > 0
	})
	s.stop() // graceful: the log is flushed before Run returns

	got := readExposures(t, logPath)
	seen := map[string]int{}
	for _, r := range got {
		seen[r.Key]++
		w, ok := wants[r.Key]
		if !ok {
			t.Errorf("record %+v for a request that resolved nothing", r)
			continue
		}
		if r.Code != w.code.String() || r.Model != "reviews" {
			t.Errorf("key %s: record code %s model %s, the caller got %v", r.Key, r.Code, r.Model, w.code)
		}
		if w.code == codes.OK && (r.Arm != w.arm || r.Version != w.version || r.Route != w.route) {
			t.Errorf("key %s: record arm %q version %d route %s, response arm %q version %d route %s", r.Key, r.Arm, r.Version, r.Route, w.arm, w.version, w.route)
		}
		if strings.HasPrefix(r.Key, "fail-") && (r.Version == 0 || r.Route != "experiment" || r.Experiment != "e") {
			t.Errorf("failed request %s: record %+v, want the version and arm it was routed to", r.Key, r)
		}
	}
	var ok, failed int
	for k, w := range wants {
		if seen[k] != 1 {
			t.Errorf("key %s (code %v): %d records, want 1", k, w.code, seen[k])
		}
		if w.code == codes.OK {
			ok++
		} else {
			failed++
		}
	}
	if len(got) != len(wants) || ok == 0 || failed == 0 {
		t.Errorf("%d records for %d routed requests (%d ok, %d failed)", len(got), len(wants), ok, failed)
	}
}

func TestExposureUnwritablePathFailsRun(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "routes.yaml")
	if err := os.WriteFile(cfg, []byte(routingConfig("127.0.0.1:1", defaultRoutes)), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "missing", "exposure.jsonl")
	err := Run(context.Background(), RunConfig{ConfigPath: cfg, ModelRoot: dir, ReadyTimeout: 1, Exposure: &exposure.Config{Path: bad}}, Deps{})
	if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "cannot open it for writing") {
		t.Fatalf("Run with exposure log %s = %v, want a start-up error naming the path", bad, err)
	}
}

// Run wires the live split monitor: a fair experiment's assignments are
// counted per arm and its SRM gauge does not flag it.
func TestSplitMonitorThroughRun(t *testing.T) {
	rd := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(rd))
	defer mp.Shutdown(context.Background())
	s := startStack(t, stackOpts{
		versions: []int64{1, 2},
		routes:   expRoutes("e", "{name: control, version: 1, weight: 90}", "{name: treatment, version: 2, weight: 10}"),
		run:      func(rc *RunConfig, d *Deps) { d.MeterProvider = mp },
	})
	s.waitRoutable("reviews", 2)
	const n = 1000
	for i := 0; i < n; i++ {
		if _, err := s.client.Predict(context.Background(), &tfgatev1.PredictRequest{Model: "reviews", RoutingKey: fmt.Sprint("customer-", i), Instances: text("fine")}); err != nil {
			t.Fatal(err)
		}
	}
	var rm metricdata.ResourceMetrics
	if err := rd.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var assigned int64
	var p float64 = -1
	for _, sm := range rm.ScopeMetrics {
		for _, md := range sm.Metrics {
			switch d := md.Data.(type) {
			case metricdata.Sum[int64]:
				if md.Name == "tfgate.experiment.assignments" {
					for _, dp := range d.DataPoints {
						assigned += dp.Value
					}
				}
			case metricdata.Gauge[float64]:
				if md.Name == "tfgate.experiment.srm.p_value" {
					p = d.DataPoints[0].Value
				}
			}
		}
	}
	if assigned != n || p < split.Threshold {
		t.Errorf("assignments %d (want %d), SRM p-value %v (want a tested fair split, >= %v)", assigned, n, p, split.Threshold)
	}
}
