//go:build unix

package gateway

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tfgate/tfgate/internal/modelgen"
	"github.com/tfgate/tfgate/internal/servingsim"
	"github.com/tfgate/tfgate/internal/servingsim/model"
	"github.com/tfgate/tfgate/internal/testenv"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// BenchmarkEnsemble compares one Predict on a 3-member mean ensemble with the
// three direct Predicts (versions 1, 2, 3, one after another) a client would
// otherwise make and combine itself, through the whole gateway (gateway.Run)
// over loopback TCP against an in-process servingsim. Two models: "fast" (no
// simulated compute) shows the gateway's own cost of the fan-out; "gpu" (2 ms
// per call) shows what running the members in parallel buys.
//
// Besides ns/op and allocs/op (the whole process: client, gateway and
// servingsim), cpu-ns/op is the process's user+system CPU per op. Client and
// servingsim work is the same in both cases except for the client's extra two
// RPCs, so the difference is mostly the gateway's.
//
//	go test -run '^$' -bench Ensemble -benchtime 2000x -count 3 ./gateway
func BenchmarkEnsemble(b *testing.B) {
	root := b.TempDir()
	costs := map[string]model.Cost{"fast": {}, "gpu": {PerCallMicros: 2000}}
	var mc strings.Builder
	mc.WriteString("model_config_list {\n")
	for name, cost := range costs {
		for v := int64(1); v <= 3; v++ {
			if err := modelgen.Export(filepath.Join(root, name, fmt.Sprint(v)), modelgen.Spec{Kind: model.KindTextClassifier, Seed: v, MaxLen: 32, Classes: 8, VocabSize: 5000, Cost: cost}); err != nil {
				b.Fatal(err)
			}
		}
		fmt.Fprintf(&mc, "  config { name: %q base_path: %q model_platform: \"tensorflow\" model_version_policy { all {} } }\n", name, filepath.Join(root, name))
	}
	mc.WriteString("}\n")
	mcf := filepath.Join(root, "models.config")
	if err := os.WriteFile(mcf, []byte(mc.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	sc := servingsim.DefaultConfig()
	sc.ModelConfigFile = mcf
	simAddr, _ := testenv.StartServingsimInProcess(b, sc)

	var routes strings.Builder
	for name := range costs {
		fmt.Fprintf(&routes, "  %s: {default: \"1\"}\n", name)
	}
	routes.WriteString("ensembles:\n")
	for name := range costs {
		fmt.Fprintf(&routes, "  %s-ens: {combiner: mean, members: [{model: %s, name: v1, version: 1}, {model: %s, name: v2, version: 2}, {model: %s, name: v3, version: 3}]}\n", name, name, name, name)
	}
	cfgPath := filepath.Join(root, "routes.yaml")
	if err := os.WriteFile(cfgPath, []byte(routingConfig(simAddr, routes.String())), 0o644); err != nil {
		b.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, RunConfig{ConfigPath: cfgPath, ModelRoot: root, ShutdownTimeout: 5 * time.Second}, Deps{Listener: lis})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("gateway.Run: %v", err)
		}
	}()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	gw := tfgatev1.NewGatewayServiceClient(cc)
	inst := text("the delivery was late but the support team fixed everything quickly, thanks!")

	for _, name := range []string{"fast", "gpu"} {
		ens := &tfgatev1.PredictRequest{Model: name + "-ens", Instances: inst}
		direct := make([]*tfgatev1.PredictRequest, 3)
		for i := range direct {
			direct[i] = &tfgatev1.PredictRequest{Model: name, Target: &tfgatev1.PredictRequest_Version{Version: int64(i + 1)}, Instances: inst}
		}
		calls := []struct {
			name string
			call func() error
		}{
			{"direct-3-sequential", func() error {
				for _, r := range direct {
					if _, err := gw.Predict(context.Background(), r); err != nil {
						return err
					}
				}
				return nil
			}},
			{"ensemble-3", func() error { _, err := gw.Predict(context.Background(), ens); return err }},
		}
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			err1, err2 := calls[0].call(), calls[1].call()
			if err1 == nil && err2 == nil {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("%s: not serving after 30s: direct: %v; ensemble: %v", name, err1, err2)
			}
		}
		for _, c := range calls {
			b.Run(name+"/"+c.name, func(b *testing.B) {
				for range 100 {
					if err := c.call(); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportAllocs()
				cpu0 := processCPU()
				for b.Loop() {
					if err := c.call(); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
			})
		}
	}
	runtime.GC()
}

// processCPU is the process's user plus system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
