// Command loadtest drives load at the tfgate gateway (typed API) or at a TF Serving
// host (raw Predict) from a workload file and reports latency, errors and the
// experiment split.
//
//	loadtest run --target gateway --addr 127.0.0.1:8500 --workload w.yaml --rate 500 --duration 20s
//	loadtest report --title T --html out.html a.json b.json   (one page for several runs)
//	loadtest routes --addr 127.0.0.1:9000 [--wait-model m --wait-versions 1,2]
//	loadtest predict --target tfserving --addr 127.0.0.1:8500 --workload w.yaml --version 2
//	loadtest exposure --config routes.yaml exposure.jsonl   (the split per experiment, SRM-tested, from a gateway exposure log)
//	loadtest proxy --listen 127.0.0.1:8600 --backend 127.0.0.1:8500   (bare grpc-go proxy, a baseline)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tfgate/tfgate/loadtest"
	"github.com/tfgate/tfgate/loadtest/report"
	"github.com/tfgate/tfgate/loadtest/stats"
	"github.com/tfgate/tfgate/loadtest/target"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := dispatch(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
}

func dispatch(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "report" {
		return reportCmd(args[1:])
	}
	if len(args) > 0 && args[0] == "routes" {
		return routesCmd(ctx, args[1:])
	}
	if len(args) > 0 && args[0] == "placement" {
		return placementCmd(ctx, args[1:], os.Stdout)
	}
	if len(args) > 0 && args[0] == "predict" {
		return predictCmd(ctx, args[1:])
	}
	if len(args) > 0 && args[0] == "exposure" {
		return exposureCmd(ctx, args[1:], os.Stdout)
	}
	if len(args) > 0 && args[0] == "proxy" {
		return proxyCmd(ctx, args[1:])
	}
	if len(args) > 0 && args[0] == "run" {
		args = args[1:]
	}
	return runCmd(ctx, args)
}

func runCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("loadtest run", flag.ContinueOnError)
	var (
		cfg       loadtest.Config
		kind      = fs.String("target", "gateway", "gateway (typed tfgate.v1 API) or tfserving (raw TF Serving Predict)")
		addr      = fs.String("addr", "", "target address host:port (required)")
		wlPath    = fs.String("workload", "", "workload YAML file (required)")
		name      = fs.String("name", "", "run name shown in reports")
		jsonOut   = fs.String("json", "", "write the summary as JSON to this file")
		htmlOut   = fs.String("html", "", "write an HTML report to this file")
		quiet     = fs.Bool("quiet", false, "do not print the table")
		progress  = fs.String("progress", "auto", "live progress line: auto (on a terminal), line (one per interval), off")
		armsFromG = fs.Bool("arms-from-gateway", true, "for models without arms in the workload, ask the gateway's ListRoutes for the configured weights")
		conns     = fs.Int("conns", 1, "gRPC connections, used round-robin")
		tracePath = fs.String("trace", "", "write one line per request (seq, intended send ms, warm-up flag, model, version, code, latency ms; warm-up included) to this file")
	)
	fs.StringVar(&cfg.Mode, "mode", "open", "open (arrival rate) or closed (fixed concurrency)")
	fs.Float64Var(&cfg.Rate, "rate", 100, "open loop: requests per second")
	fs.StringVar(&cfg.Arrival, "arrival", "fixed", "open loop: fixed or poisson arrivals")
	fs.IntVar(&cfg.Concurrency, "concurrency", 1, "closed loop: workers")
	fs.IntVar(&cfg.MaxInFlight, "max-inflight", 1000, "open loop: bound on outstanding requests")
	fs.DurationVar(&cfg.Duration, "duration", 0, "measurement duration after warm-up (or use --requests)")
	fs.Int64Var(&cfg.Requests, "requests", 0, "measured request count (or use --duration)")
	fs.DurationVar(&cfg.Warmup, "warmup", 0, "warm-up, not recorded")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" || *wlPath == "" {
		return errors.New("--addr and --workload are required")
	}
	if *conns < 1 || *conns > 64 {
		return fmt.Errorf("--conns %d must be between 1 and 64", *conns)
	}
	f, err := os.Open(*wlPath)
	if err != nil {
		return err
	}
	wl, err := loadtest.ParseWorkload(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", *wlPath, err)
	}
	switch *progress {
	case "auto":
		if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			cfg.Progress = os.Stderr
		}
	case "line":
		cfg.Progress, cfg.ProgressNewline = os.Stderr, true
	case "off":
	default:
		return fmt.Errorf("--progress %q: want auto, line or off", *progress)
	}

	var ccs []*grpc.ClientConn
	defer func() {
		for _, cc := range ccs {
			cc.Close()
		}
	}()
	for i := 0; i < *conns; i++ {
		cc, err := grpc.NewClient(*addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
		if err != nil {
			return fmt.Errorf("dial %s: %w", *addr, err)
		}
		ccs = append(ccs, cc)
	}
	arms := wl.Arms()
	var t loadtest.Target
	switch *kind {
	case "gateway":
		ts := make(multi, len(ccs))
		for i, cc := range ccs {
			ts[i] = &target.Gateway{Client: tfgatev1.NewGatewayServiceClient(cc)}
		}
		t = ts.pick()
		if *armsFromG {
			actx, cancel := context.WithTimeout(ctx, 5*time.Second)
			got, err := target.Arms(actx, tfgatev1.NewGatewayServiceClient(ccs[0]))
			cancel()
			if err != nil {
				fmt.Fprintf(os.Stderr, "loadtest: no arm weights from the gateway (%v); the split is shown without an SRM test for models without arms in the workload\n", err)
			}
			for m, w := range got {
				if _, ok := arms[m]; !ok {
					arms[m] = w
				}
			}
		}
	case "tfserving":
		if err := wl.RequireRaw(); err != nil {
			return err
		}
		ts := make(multi, len(ccs))
		for i, cc := range ccs {
			ts[i] = &target.TFServing{Client: servingpb.NewPredictionServiceClient(cc)}
		}
		t = ts.pick()
	default:
		return fmt.Errorf("--target %q: want gateway or tfserving", *kind)
	}

	if *tracePath != "" {
		tf, err := os.Create(*tracePath)
		if err != nil {
			return err
		}
		defer tf.Close()
		cfg.Trace = tf
	}
	out, runErr := loadtest.Run(ctx, cfg, wl, t)
	if out.Recorder == nil {
		return runErr
	}
	s := stats.Summarize(out.Recorder, arms, out.Elapsed)
	s.Name, s.Target, s.Mode, s.Late, s.Total = *name, *kind+" "+*addr, cfg.Mode, out.Late, out.Total
	if cfg.Mode == "open" {
		s.TargetRate = cfg.Rate
	}
	if !*quiet {
		if err := report.Text(os.Stdout, s); err != nil {
			return err
		}
	}
	if *jsonOut != "" {
		if err := writeFile(*jsonOut, func(w io.Writer) error { return report.JSON(w, s) }); err != nil {
			return err
		}
	}
	if *htmlOut != "" {
		title := *name
		if title == "" {
			title = "tfgate load test"
		}
		if err := writeFile(*htmlOut, func(w io.Writer) error { return report.HTML(w, title, s) }); err != nil {
			return err
		}
	}
	return runErr
}

// multi spreads requests over several connections' targets.
type multi []loadtest.Target

type roundRobin struct {
	ts multi
	n  atomic.Uint64
}

func (m multi) pick() loadtest.Target {
	if len(m) == 1 {
		return m[0]
	}
	return &roundRobin{ts: m}
}

func (r *roundRobin) Do(ctx context.Context, req *loadtest.Request) loadtest.Result {
	return r.ts[r.n.Add(1)%uint64(len(r.ts))].Do(ctx, req)
}

func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	return f.Close()
}

// reportCmd renders one HTML page (and optionally the tables) from summaries
// written with --json.
func reportCmd(args []string) error {
	fs := flag.NewFlagSet("loadtest report", flag.ContinueOnError)
	title := fs.String("title", "tfgate load test", "page title")
	htmlOut := fs.String("html", "", "HTML output file (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *htmlOut == "" || fs.NArg() == 0 {
		return errors.New("usage: loadtest report --html OUT.html [--title T] RUN.json...")
	}
	var runs []stats.Summary
	for _, p := range fs.Args() {
		s, err := readSummary(p)
		if err != nil {
			return err
		}
		runs = append(runs, s)
	}
	return writeFile(*htmlOut, func(w io.Writer) error { return report.HTML(w, *title, runs...) })
}

func readSummary(path string) (stats.Summary, error) {
	var s stats.Summary
	f, err := os.Open(path)
	if err != nil {
		return s, err
	}
	defer f.Close()
	if err := jsonDecode(f, &s); err != nil {
		return s, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}
