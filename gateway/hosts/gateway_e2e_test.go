package hosts_test

// End to end through the gateway's typed API: a gateway (gateway.Run, in process)
// whose pools come from a real Consul agent, in front of two servingsim processes.

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tfgate/tfgate/gateway"
	"github.com/tfgate/tfgate/internal/modelgen"
	"github.com/tfgate/tfgate/internal/testenv"
	"github.com/tfgate/tfgate/internal/testwait"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// hostRecorder records which host served each backend call.
type hostRecorder struct {
	gateway.Backends
	mu    sync.Mutex
	calls []hostCall
}

type hostCall struct {
	start time.Time
	host  string
	err   error
}

func (r *hostRecorder) Predict(ctx context.Context, pools []string, req *servingpb.PredictRequest) (*servingpb.PredictResponse, string, error) {
	start := time.Now()
	resp, h, err := r.Backends.Predict(ctx, pools, req)
	r.mu.Lock()
	r.calls = append(r.calls, hostCall{start, h, err})
	r.mu.Unlock()
	return resp, h, err
}

func (r *hostRecorder) snapshot() []hostCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]hostCall(nil), r.calls...)
}

func TestGatewayConsulFailover(t *testing.T) {
	c := testenv.StartConsul(t)
	cl := c.Client(t)
	root := t.TempDir()
	if err := modelgen.Export(filepath.Join(root, "churn", "1"), modelgen.Spec{Kind: "linear", Seed: 7919, Features: 4}); err != nil {
		t.Fatal(err)
	}
	mcf := filepath.Join(t.TempDir(), "models.config")
	conf := fmt.Sprintf(`model_config_list { config { name: "churn" base_path: %q model_platform: "tensorflow" } }`, filepath.Join(root, "churn"))
	if err := os.WriteFile(mcf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	gpu := testenv.StartServingsim(t, "--model_config_file="+mcf)
	cpu := testenv.StartServingsim(t, "--model_config_file="+mcf)
	for id, h := range map[string]*testenv.Servingsim{"gpu": gpu, "cpu": cpu} {
		if err := cl.Agent().ServiceRegister(&api.AgentServiceRegistration{
			ID: id, Name: "tf-serving", Address: "127.0.0.1", Port: h.Port, Tags: []string{id},
			Check: &api.AgentServiceCheck{CheckID: "service:" + id, TTL: "1h", Status: api.HealthPassing},
		}); err != nil {
			t.Fatal(err)
		}
	}
	cfgPath := filepath.Join(t.TempDir(), "routes.yaml")
	routes := fmt.Sprintf(`backends:
  pools:
    gpu: {consul: {service: tf-serving, tag: gpu}}
    cpu: {consul: {service: tf-serving, tag: cpu}}
  consul: {address: %q}
  consul_wait_time: 10s
  readiness: {interval: 200ms}
defaults:
  pools: [gpu, cpu]
  timeout: 5s
models:
  churn:
    default: "1"
`, c.HTTPAddr)
	if err := os.WriteFile(cfgPath, []byte(routes), 0o600); err != nil {
		t.Fatal(err)
	}

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := &hostRecorder{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		done <- gateway.Run(ctx, gateway.RunConfig{ConfigPath: cfgPath, ModelRoot: root, SpecPollInterval: 100 * time.Millisecond, ShutdownTimeout: 5 * time.Second},
			gateway.Deps{
				Listener:     lis,
				WrapBackends: func(b gateway.Backends) gateway.Backends { rec.Backends = b; return rec },
				Started:      func(net.Addr, *gateway.Server) { close(started) },
			})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway.Run: %v", err)
		}
	})
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("gateway.Run: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("gateway did not start")
	}
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := tfgatev1.NewGatewayServiceClient(conn)
	req := &tfgatev1.PredictRequest{Model: "churn", Instances: []*tfgatev1.Instance{{Numeric: map[string]float64{"f0": 1.5}}}}
	testwait.Until(t, "churn servable through the gateway", func() bool {
		cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer ccancel()
		_, err := client.Predict(cctx, req)
		return err == nil
	})

	// Steady concurrent load through the typed API.
	var (
		lwg      sync.WaitGroup
		lmu      sync.Mutex
		failures []error
		total    int
	)
	lctx, lcancel := context.WithCancel(context.Background())
	for w := 0; w < 6; w++ {
		lwg.Add(1)
		go func() {
			defer lwg.Done()
			for lctx.Err() == nil {
				cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
				resp, err := client.Predict(cctx, req)
				ccancel()
				lmu.Lock()
				total++
				if err != nil {
					failures = append(failures, err)
				} else if resp.GetVersion() != 1 {
					failures = append(failures, fmt.Errorf("served version %d, want 1", resp.GetVersion()))
				}
				lmu.Unlock()
			}
		}()
	}
	stopLoad := func() { lcancel(); lwg.Wait() }
	t.Cleanup(stopLoad)
	testwait.Until(t, "load on gpu", func() bool { return len(rec.snapshot()) > 200 })
	for _, call := range rec.snapshot() {
		if call.err == nil && call.host != gpu.Addr {
			t.Fatalf("before the check failed a call went to %s, want the gpu host %s", call.host, gpu.Addr)
		}
	}

	t0 := time.Now()
	if err := cl.Agent().UpdateTTL("service:gpu", "failing", api.HealthCritical); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, "traffic on cpu", func() bool {
		for _, call := range rec.snapshot() {
			if call.host == cpu.Addr && call.err == nil {
				return true
			}
		}
		return false
	})
	n := len(rec.snapshot())
	testwait.Until(t, "more load", func() bool { return len(rec.snapshot()) > n+200 })
	stopLoad()

	var lastGPU, firstCPU time.Duration = -1, -1
	for _, call := range rec.snapshot() {
		d := call.start.Sub(t0)
		if call.err == nil && call.host == gpu.Addr && d > lastGPU {
			lastGPU = d
		}
		if call.err == nil && call.host == cpu.Addr && (firstCPU < 0 || d < firstCPU) {
			firstCPU = d
		}
	}
	t.Logf("through the gateway: consul check critical -> last call sent to gpu at %v, first call served by cpu at %v (%d client calls)", lastGPU, firstCPU, total)
	lmu.Lock()
	defer lmu.Unlock()
	if len(failures) > 0 {
		t.Fatalf("%d of %d client calls failed during failover, want 0; first: %v", len(failures), total, failures[0])
	}
}
