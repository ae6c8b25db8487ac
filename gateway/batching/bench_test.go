package batching

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tfgate/tfgate/internal/modelgen"
	"github.com/tfgate/tfgate/internal/servingsim/model"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

// GPU-like cost of the benchmark model: 5ms per execution plus 50µs per row, one
// execution at a time (issue 5's scenario).
const (
	benchPerCall = 5 * time.Millisecond
	benchPerRow  = 50 * time.Microsecond
	benchPhase   = 2 * time.Second
)

func benchSim(b *testing.B) Invoke {
	return startSim(b, "lin", modelgen.Spec{Kind: model.KindLinear, Features: 16, Classes: 4, Seed: 1,
		Cost: model.Cost{PerCallMicros: benchPerCall.Microseconds(), PerRowMicros: benchPerRow.Microseconds(), MaxConcurrent: 1}})
}

func benchBatchConfig() Config {
	c := DefaultConfig()
	c.Enabled = true
	c.MaxBatchSize = 64
	c.BatchTimeout = 2 * time.Millisecond
	c.MaxInFlightBatches = 1 // one host running one execution at a time
	c.MaxEnqueuedBatches = 10
	return c
}

// closedLoop runs callers that each send one-row requests back to back for d and
// returns completed requests per second.
func closedLoop(b *testing.B, do Invoke, callers int, d time.Duration) float64 {
	var ok, failed atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(c), 1))
			for ctx.Err() == nil {
				req := linBenchRequest(r)
				if _, err := do(context.WithoutCancel(ctx), req); err != nil {
					failed.Add(1)
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		b.Logf("closed loop with %d callers: %d failures", callers, n)
	}
	return float64(ok.Load()) / time.Since(start).Seconds()
}

func linBenchRequest(r *rand.Rand) *servingpb.PredictRequest {
	req := linRequestN(r, 1, 16)
	return req
}

// openLoop offers rate requests per second for d, each from its intended send time,
// and returns the latencies of admitted requests and the number shed.
// inCall are the latencies measured from the actual call instead (the difference is
// the load generator's own lag on a busy machine).
func openLoop(do Invoke, rate float64, d time.Duration) (lat, inCall []time.Duration, shed, failed int64) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	var nShed, nFailed atomic.Int64
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	r := rand.New(rand.NewPCG(7, 7))
	total := int(d / interval)
	for i := 0; i < total; {
		// Release every request whose intended send time has come, then nap: one
		// sleep per request would fall behind at thousands per second.
		for ; i < total && !start.Add(time.Duration(i)*interval).After(time.Now()); i++ {
			at := start.Add(time.Duration(i) * interval)
			req := linBenchRequest(r)
			wg.Add(1)
			go func() {
				defer wg.Done()
				called := time.Now()
				_, err := do(context.Background(), req)
				took, tookInCall := time.Since(at), time.Since(called)
				switch {
				case errors.Is(err, ErrQueueFull):
					nShed.Add(1)
				case err != nil:
					nFailed.Add(1)
				default:
					mu.Lock()
					lat = append(lat, took)
					inCall = append(inCall, tookInCall)
					mu.Unlock()
				}
			}()
		}
		time.Sleep(200 * time.Microsecond)
	}
	wg.Wait()
	slices.Sort(lat)
	slices.Sort(inCall)
	return lat, inCall, nShed.Load(), nFailed.Load()
}

func p99(lat []time.Duration) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	return lat[(len(lat)*99)/100]
}

// BenchmarkBatchingGain is issue 5's batching gain: servingsim with a GPU-like cost
// (5ms per call + 50µs per row, one execution at a time), offered load above
// capacity by closed-loop callers sending one row each. It reports, from the same
// run, unbatched and batched (max 64, 2ms timeout) throughput and their ratio
// (gain_x), then open-loop p99 latency at half the measured batched capacity (with
// its target: batch timeout + one full batch's service time + 2ms) and, at twice
// that capacity, the admitted requests' p99 and the share shed.
//
//	go test -run '^$' -bench BatchingGain -benchtime 1x ./gateway/batching
func BenchmarkBatchingGain(b *testing.B) {
	sim := benchSim(b)
	cfg := benchBatchConfig()
	for range b.N {
		unbatched := closedLoop(b, sim, 64, benchPhase)
		bt := New(cfg, sim, Options{Key: Key{Model: "lin", Version: 1}})
		batched := closedLoop(b, bt.Do, 512, benchPhase)
		b.ReportMetric(unbatched, "unbatched_req/s")
		b.ReportMetric(batched, "batched_req/s")
		b.ReportMetric(batched/unbatched, "gain_x")

		fullBatch := benchPerCall + time.Duration(cfg.MaxBatchSize)*benchPerRow
		target := cfg.BatchTimeout + fullBatch + 2*time.Millisecond
		lat, inCall, shed, failed := openLoop(bt.Do, batched/2, benchPhase)
		b.ReportMetric(float64(p99(lat))/1e6, "half_p99_ms")
		b.ReportMetric(float64(p99(inCall))/1e6, "half_p99_in_call_ms")
		b.ReportMetric(float64(target)/1e6, "half_p99_target_ms")
		if shed+failed > 0 {
			b.Logf("at half capacity: %d shed, %d failed", shed, failed)
		}
		lat, inCall, shed, failed = openLoop(bt.Do, batched*2, benchPhase)
		total := float64(int64(len(lat)) + shed + failed)
		b.ReportMetric(float64(p99(lat))/1e6, "2x_admitted_p99_ms")
		b.ReportMetric(float64(p99(inCall))/1e6, "2x_admitted_p99_in_call_ms")
		b.ReportMetric(float64(shed)/total, "2x_shed_fraction")
		// The admitted p99 is bounded by the queue: about (max_enqueued_batches + 1)
		// batch service times, whatever this machine makes of a service time.
		b.ReportMetric(float64(bt.Stats().ServiceTime)/1e6, "2x_batch_service_ms")
		if failed > 0 {
			b.Logf("at 2x capacity: %d failed (not shed)", failed)
		}
		if err := bt.Close(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}
