package loadtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tfgate/tfgate/loadtest/stats"
)

// ErrConfig wraps every invalid run configuration.
var ErrConfig = errors.New("invalid load-test config")

// Target sends one request and says what served it. It must be safe for concurrent
// use. A non-nil Err is classified by its gRPC status code.
type Target interface {
	Do(ctx context.Context, r *Request) Result
}

// Result is what a target reports for one request.
type Result struct {
	Model      string
	Version    int64
	Arm        string
	Experiment string
	Err        error
}

// Config is how Run drives load.
type Config struct {
	// Mode is "open" (arrival rate) or "closed" (fixed concurrency). Default open.
	Mode string
	// Rate is the open-loop arrival rate per second. Required for open loop.
	Rate float64
	// Arrival is "fixed" or "poisson". Default fixed.
	Arrival string
	// Concurrency is the closed-loop worker count. Default 1.
	Concurrency int
	// MaxInFlight bounds outstanding open-loop requests. Default 1000.
	MaxInFlight int
	// Duration of measurement, after Warmup. One of Duration and Requests is required.
	Duration time.Duration
	// Requests ends the run after this many measured requests. Default 0 (use Duration).
	Requests int64
	// Warmup runs load without recording it. Default 0.
	Warmup time.Duration
	// Progress receives a live progress line every ProgressEvery. Default nil (none).
	Progress io.Writer
	// ProgressEvery is the progress interval. Default 1s.
	ProgressEvery time.Duration
	// ProgressNewline ends progress lines with a newline instead of a carriage
	// return (for logs rather than terminals). Default false.
	ProgressNewline bool
	// Trace, when set, receives one line per completed request, warm-up included
	// (TraceHeader names the columns): its sequence number in send order, intended
	// send time in ms from the start of the run, warm-up flag, model, version, gRPC
	// code and latency from the actual send in ms. Lines are written as requests
	// complete (not in sequence order); sort by seq to replay. Default nil.
	Trace io.Writer
}

// TraceHeader is the first line Run writes to Config.Trace.
const TraceHeader = "seq\tat_ms\twarmup\tmodel\tversion\tcode\tlatency_ms"

// Validate applies defaults and reports every problem at once.
func (c *Config) Validate() error {
	if c.Mode == "" {
		c.Mode = "open"
	}
	if c.Arrival == "" {
		c.Arrival = "fixed"
	}
	if c.Concurrency == 0 {
		c.Concurrency = 1
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 1000
	}
	if c.ProgressEvery == 0 {
		c.ProgressEvery = time.Second
	}
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, a...)))
	}
	switch c.Mode {
	case "open":
		if _, err := NewArrivals(c.Arrival, c.Rate, nil); err != nil {
			errs = append(errs, err)
		}
	case "closed":
		if c.Concurrency < 1 || c.Concurrency > 100000 {
			bad("concurrency %d must be between 1 and 100000", c.Concurrency)
		}
	default:
		bad("mode %q: want open or closed", c.Mode)
	}
	if c.MaxInFlight < 1 || c.MaxInFlight > 100000 {
		bad("max in-flight %d must be between 1 and 100000", c.MaxInFlight)
	}
	if c.Duration <= 0 && c.Requests <= 0 {
		bad("set a duration or a request count")
	}
	if c.Duration < 0 || c.Requests < 0 || c.Warmup < 0 {
		bad("duration, requests and warm-up must not be negative")
	}
	if c.ProgressEvery < 10*time.Millisecond {
		bad("progress interval %v is below 10ms", c.ProgressEvery)
	}
	return errors.Join(errs...)
}

// Outcome is what Run measured.
type Outcome struct {
	Recorder *stats.Recorder
	// Elapsed is from the end of warm-up to the last measured completion.
	Elapsed time.Duration
	// Total counts every completed request, warm-up included (for per-request
	// costs measured over the whole run).
	Total int64
	// Late counts open-loop requests sent more than a millisecond after their
	// intended time (the generator or the in-flight bound held them back).
	Late int64
}

const shards = 8

type runner struct {
	cfg          Config
	target       Target
	measureStart time.Time
	shard        [shards]struct {
		sync.Mutex
		r *stats.Recorder
	}
	total, done, failed, late atomic.Int64
	inflight                  atomic.Int64
	lastDone                  atomic.Int64 // UnixNano of the last measured completion
	start                     time.Time
	seq                       atomic.Int64 // closed loop: the next request's sequence number
	traceMu                   sync.Mutex
	trace                     *bufio.Writer // nil: no trace
	traceErr                  error
}

// Run drives load at t until the configured duration or request count is reached,
// or ctx is cancelled (then it returns what it measured so far and ctx's error).
func Run(ctx context.Context, cfg Config, w *Workload, t Target) (Outcome, error) {
	if err := cfg.Validate(); err != nil {
		return Outcome{}, err
	}
	r := &runner{cfg: cfg, target: t}
	for i := range r.shard {
		r.shard[i].r = stats.NewRecorder()
	}
	if cfg.Trace != nil {
		r.trace = bufio.NewWriterSize(cfg.Trace, 64<<10)
		r.trace.WriteString(TraceHeader + "\n")
	}
	start := time.Now()
	r.start = start
	r.measureStart = start.Add(cfg.Warmup)
	var end time.Time
	if cfg.Duration > 0 {
		end = r.measureStart.Add(cfg.Duration)
	}
	progCtx, stopProg := context.WithCancel(ctx)
	var progWG sync.WaitGroup
	if cfg.Progress != nil {
		progWG.Add(1)
		go func() { defer progWG.Done(); r.progress(progCtx) }()
	}
	if cfg.Mode == "closed" {
		r.closed(ctx, w, end)
	} else {
		r.open(ctx, w, start, end)
	}
	stopProg()
	progWG.Wait()
	if cfg.Progress != nil {
		r.printProgress(true)
	}
	out := Outcome{Recorder: stats.NewRecorder(), Late: r.late.Load(), Total: r.total.Load()}
	for i := range r.shard {
		out.Recorder.Merge(r.shard[i].r)
	}
	if ld := r.lastDone.Load(); ld > 0 {
		out.Elapsed = time.Unix(0, ld).Sub(r.measureStart)
	}
	if r.trace != nil {
		if err := r.trace.Flush(); err != nil && r.traceErr == nil {
			r.traceErr = err
		}
		if r.traceErr != nil {
			return out, fmt.Errorf("%w: writing the trace: %w", ErrConfig, r.traceErr)
		}
	}
	return out, ctx.Err()
}

type job struct {
	seq      int64
	intended time.Time
	req      *Request
}

// open schedules arrivals from one goroutine and hands them to a pool of
// MaxInFlight workers. A full pool blocks the scheduler; the delay is counted.
func (r *runner) open(ctx context.Context, w *Workload, start, end time.Time) {
	gen := NewGenerator(w, 0)
	arr, _ := NewArrivals(r.cfg.Arrival, r.cfg.Rate, rand.New(rand.NewPCG(w.Seed, 1<<32)))
	jobs := make(chan job)
	var wg sync.WaitGroup
	for i := 0; i < r.cfg.MaxInFlight; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := range jobs {
				if d := time.Since(j.intended); d > time.Millisecond {
					r.late.Add(1)
				}
				r.do(ctx, i, j.seq, j.req, j.intended)
			}
		}(i)
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	next := start
	var measured, seq int64
schedule:
	for {
		next = next.Add(arr.Next())
		if !end.IsZero() && !next.Before(end) {
			break
		}
		if r.cfg.Requests > 0 && measured >= r.cfg.Requests {
			break
		}
		if d := time.Until(next); d > 50*time.Microsecond {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				break schedule
			case <-timer.C:
			}
		}
		if !next.Before(r.measureStart) {
			measured++
		}
		select {
		case jobs <- job{seq: seq, intended: next, req: gen.Next()}:
			seq++
		case <-ctx.Done():
			break schedule
		}
	}
	close(jobs)
	wg.Wait()
}

// closed runs Concurrency workers back to back.
func (r *runner) closed(ctx context.Context, w *Workload, end time.Time) {
	var wg sync.WaitGroup
	var measured atomic.Int64
	for i := 0; i < r.cfg.Concurrency; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			gen := NewGenerator(w, uint64(i))
			for ctx.Err() == nil {
				now := time.Now()
				if !end.IsZero() && !now.Before(end) {
					return
				}
				if !now.Before(r.measureStart) && r.cfg.Requests > 0 && measured.Add(1) > r.cfg.Requests {
					return
				}
				r.do(ctx, i, r.seq.Add(1)-1, gen.Next(), now)
			}
		}(i)
	}
	wg.Wait()
}

// do sends one request and records it when its send time is after warm-up.
func (r *runner) do(ctx context.Context, worker int, seq int64, req *Request, from time.Time) {
	r.inflight.Add(1)
	rctx, cancel := context.WithTimeout(ctx, req.Deadline)
	sent := time.Now()
	res := r.target.Do(rctx, req)
	cancel()
	r.inflight.Add(-1)
	now := time.Now()
	r.total.Add(1)
	if ctx.Err() != nil && res.Err != nil {
		return // the run was cancelled; this failure is ours, not the target's
	}
	code := status.Code(res.Err)
	if res.Err != nil && code == codes.Unknown {
		if c := status.FromContextError(res.Err).Code(); c != codes.Unknown {
			code = c
		}
	}
	warm := from.Before(r.measureStart)
	r.writeTrace(seq, from, warm, req, code, now.Sub(sent))
	if warm {
		return
	}
	s := stats.Sample{
		Model: res.Model, Version: res.Version, Arm: res.Arm, Experiment: res.Experiment,
		Code: code.String(), Latency: now.Sub(from), Service: now.Sub(sent), At: now.Sub(r.measureStart),
		RoutingKey: req.RoutingKey,
	}
	if s.Model == "" {
		s.Model = req.Model
	}
	if res.Err != nil {
		s.Err = status.Convert(res.Err).Message()
		r.failed.Add(1)
	}
	sh := &r.shard[worker%shards]
	sh.Lock()
	sh.r.Record(s)
	sh.Unlock()
	r.done.Add(1)
	for {
		old := r.lastDone.Load()
		if now.UnixNano() <= old || r.lastDone.CompareAndSwap(old, now.UnixNano()) {
			break
		}
	}
}

// writeTrace appends one request's line to the trace (see Config.Trace).
func (r *runner) writeTrace(seq int64, from time.Time, warmup bool, req *Request, code codes.Code, latency time.Duration) {
	if r.trace == nil {
		return
	}
	w := 0
	if warmup {
		w = 1
	}
	r.traceMu.Lock()
	defer r.traceMu.Unlock()
	if r.traceErr != nil {
		return
	}
	_, err := fmt.Fprintf(r.trace, "%d\t%.3f\t%d\t%s\t%d\t%s\t%.3f\n", seq, float64(from.Sub(r.start))/float64(time.Millisecond),
		w, req.Model, req.Version, code, float64(latency)/float64(time.Millisecond))
	if err != nil {
		r.traceErr = err
	}
}

func (r *runner) progress(ctx context.Context) {
	t := time.NewTicker(r.cfg.ProgressEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.printProgress(false)
		}
	}
}

func (r *runner) printProgress(final bool) {
	h := stats.NewHist()
	for i := range r.shard {
		sh := &r.shard[i]
		sh.Lock()
		h.Merge(sh.r.All)
		sh.Unlock()
	}
	el := time.Since(r.measureStart)
	phase := "run"
	if el < 0 {
		phase, el = "warm-up", el+r.cfg.Warmup
	}
	done := r.done.Load()
	rate := 0.0
	if el > 0 && phase == "run" {
		rate = float64(done) / el.Seconds()
	}
	end := "\r"
	if r.cfg.ProgressNewline || final {
		end = "\n"
	}
	fmt.Fprintf(r.cfg.Progress, "[%s %5.1fs] %8.0f req/s  done %d  errors %d  in-flight %d  p50 %.2fms  p99 %.2fms  late %d   %s",
		phase, el.Seconds(), rate, done, r.failed.Load(), r.inflight.Load(),
		float64(h.ValueAtQuantile(50))/1000, float64(h.ValueAtQuantile(99))/1000, r.late.Load(), end)
}
