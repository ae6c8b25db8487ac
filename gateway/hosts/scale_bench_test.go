package hosts

import (
	"context"
	"os"
	"regexp"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tfgate/tfgate/internal/testenv"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

// BenchmarkReadinessScale measures readiness polling at scale with the default
// readiness settings: how long after Run starts until every model is AVAILABLE in
// the Manager's snapshot (s-to-all-available), then over a steady-state window the
// GetModelStatus calls per second the Manager sends (polls/s) and this process's
// CPU per wall second (cpu-ms/s).
//
// With TFGATE_SCALE_MODELS_CONFIG set to a models.config (e.g. the 50k layout from
// internal/tools/scalegen), the backend is a servingsim process serving it, so the
// CPU is the Manager's alone; otherwise it is the in-test fake serving
// TFGATE_SCALE_N models (default 50,000) in this process, so the CPU includes the
// fake's. TFGATE_SCALE_WINDOW is the steady-state window (default 5s). Run with
// -benchtime=1x; compare against the same benchmark on the previous commit.
func BenchmarkReadinessScale(b *testing.B) {
	n, _ := strconv.Atoi(os.Getenv("TFGATE_SCALE_N"))
	if n <= 0 {
		n = 50000
	}
	window := 5 * time.Second
	if d, err := time.ParseDuration(os.Getenv("TFGATE_SCALE_WINDOW")); err == nil && d > 0 {
		window = d
	}
	var addr string
	var models []string
	if cfgPath := os.Getenv("TFGATE_SCALE_MODELS_CONFIG"); cfgPath != "" {
		data, err := os.ReadFile(cfgPath)
		if err != nil {
			b.Fatal(err)
		}
		for _, mm := range regexp.MustCompile(`name: "([^"]+)"`).FindAllSubmatch(data, -1) {
			models = append(models, string(mm[1]))
		}
		s := testenv.StartServingsim(b, "--model_config_file="+cfgPath, "--file_system_poll_wait_seconds=0")
		addr = s.Addr
		waitLoaded(b, addr, models[len(models)-1])
	} else {
		vs := make(map[string][]int64, n)
		for i := 0; i < n; i++ {
			name := "cust-" + strconv.Itoa(i)
			vs[name] = []int64{1}
			models = append(models, name)
		}
		addr = startFakeB(b, vs).addr
	}
	var polls atomic.Int64
	count := grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if method == servingpb.ModelService_GetModelStatus_FullMethodName {
			polls.Add(1)
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	})
	for i := 0; i < b.N; i++ {
		cfg := DefaultConfig()
		cfg.Pools = map[string]PoolConfig{"p": {Static: []string{addr}}}
		m, err := New(cfg, Options{DialOptions: []grpc.DialOption{count}})
		if err != nil {
			b.Fatal(err)
		}
		m.SetModels(models)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		start := time.Now()
		go func() { done <- m.Run(ctx) }()
		for m.Snapshot().entries < len(models) {
			if time.Since(start) > 5*time.Minute {
				b.Fatalf("only %d of %d models AVAILABLE after 5m", m.Snapshot().entries, len(models))
			}
			time.Sleep(50 * time.Millisecond)
		}
		toAll := time.Since(start)
		time.Sleep(time.Second) // let the start-up round settle
		p0, c0, t0 := polls.Load(), cpuTime(), time.Now()
		time.Sleep(window)
		p1, c1, el := polls.Load(), cpuTime(), time.Since(t0)
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(toAll.Seconds(), "s-to-all-available")
		b.ReportMetric(float64(p1-p0)/el.Seconds(), "polls/s")
		b.ReportMetric(float64((c1-c0).Milliseconds())/el.Seconds(), "cpu-ms/s")
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// waitLoaded waits until the backend reports model AVAILABLE (servingsim loads its
// config in the background after it starts listening).
func waitLoaded(b *testing.B, addr, model string) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	c := servingpb.NewModelServiceClient(conn)
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		resp, err := c.GetModelStatus(context.Background(), &servingpb.GetModelStatusRequest{ModelSpec: &servingpb.ModelSpec{Name: model}})
		if err == nil {
			for _, s := range resp.GetModelVersionStatus() {
				if s.GetState() == servingpb.ModelVersionStatus_AVAILABLE {
					return
				}
			}
		}
	}
	b.Fatalf("model %q not AVAILABLE on %s after 2m", model, addr)
}
