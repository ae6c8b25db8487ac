// Command modelsync is the sidecar that publishes model versions from S3 into a TF
// Serving model base path when S3 event notifications arrive on SQS.
//
//	modelsync run -base-path /models -queue-url URL -bucket B [flags]   (or: modelsync -base-path ...)
//	modelsync run -placement -placement-host ID ... (sync only this host's assignment; Consul from CONSUL_HTTP_ADDR)
//	modelsync publish -bucket B -model M -version V [-topic ARN] [-queue-url URL [-sns]] DIR
//	modelsync history -base-path /models [-model M] [-outcome failed,rejected] [-since 24h] [-sort duration -desc]
//	modelsync extract [-root V] [-gzip klauspost|std] [-fsync] ARCHIVE DIR   (check an archive as the sidecar would)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/tfgate/tfgate/internal/telemetry"
	"github.com/tfgate/tfgate/modelsync"
	"github.com/tfgate/tfgate/modelsync/extract"
	"github.com/tfgate/tfgate/modelsync/journal"
	"github.com/tfgate/tfgate/modelsync/publish"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	args := os.Args[1:]
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "run":
		err = run(ctx, args)
	case "publish":
		err = runPublish(ctx, args)
	case "history":
		err = history(args)
	case "extract":
		err = extractCmd(ctx, args)
	default:
		err = fmt.Errorf("unknown command %q: want run, publish, history or extract", cmd)
	}
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "modelsync:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	// -config is read first; flags given on the command line then override the file.
	pre := flag.NewFlagSet("run", flag.ContinueOnError)
	pre.SetOutput(discard{})
	cfgFile := pre.String("config", "", "")
	_ = pre.Parse(args)
	cfg := modelsync.DefaultConfig()
	if *cfgFile != "" {
		var err error
		if cfg, err = modelsync.LoadConfig(*cfgFile); err != nil {
			return err
		}
	}
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.String("config", "", "JSON config file decoded over the defaults (unknown fields rejected); flags override it")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "json", "log format: json or text")
	adminAddr := fs.String("admin-listen", "", "admin HTTP address serving /metrics, /healthz, /readyz (e.g. :9502); empty disables")
	pprof := fs.Bool("pprof", false, "serve /debug/pprof/ on the admin server")
	bindFlags(fs, &cfg)
	bindPlacementFlags(fs, &cfg)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := telemetry.NewLogger(os.Stderr, telemetry.LogConfig{Format: *logFormat, Level: *logLevel})
	if err != nil {
		return fmt.Errorf("-log-format/-log-level: %w", err)
	}
	// Traces and metrics follow the OTEL_* environment; /metrics is on the admin server.
	prov, _, err := telemetry.FromEnv(ctx, "tfgate-modelsync")
	if err != nil {
		return err
	}
	defer prov.Close(5 * time.Second)
	deps, closeDeps, err := modelsync.NewDeps(ctx, cfg)
	if err != nil {
		return err
	}
	defer closeDeps()
	deps.Logger, deps.Meter, deps.TracerProvider = log, prov.MeterProvider, prov.TracerProvider
	if cfg.Placement.Enabled {
		var closePlacement func()
		if deps.Placement, closePlacement, err = modelsync.NewPlacementDeps(cfg, log); err != nil {
			return err
		}
		defer closePlacement()
	}
	if *adminAddr == "" {
		return modelsync.Run(ctx, cfg, deps)
	}
	adminCtx, stopAdmin := context.WithCancel(context.WithoutCancel(ctx))
	adminDone := make(chan error, 1)
	admin := telemetry.NewAdmin(telemetry.AdminOptions{Gatherer: prov.Registry, Pprof: *pprof, Logger: log})
	go func() { adminDone <- admin.ListenAndServe(adminCtx, *adminAddr) }()
	err = modelsync.Run(ctx, cfg, deps)
	stopAdmin()
	return errors.Join(err, <-adminDone)
}

func runPublish(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("publish", flag.ContinueOnError)
	var o publish.PublishOptions
	fs.StringVar(&o.Bucket, "bucket", "", "bucket to upload to (required)")
	fs.StringVar(&o.Prefix, "prefix", "", "key prefix: the key is <prefix>/<model>/<version>.tar.gz")
	fs.StringVar(&o.Model, "model", "", "model name (required)")
	fs.Int64Var(&o.Version, "version", -1, "version number (required)")
	fs.StringVar(&o.Topic, "topic", "", "publish the S3 event notification to this SNS topic ARN, as the bucket's notification configuration would")
	fs.StringVar(&o.QueueURL, "queue-url", "", "also send the S3 event notification to this SQS queue")
	fs.BoolVar(&o.SNS, "sns", false, "wrap the notification in an SNS envelope")
	fs.StringVar(&o.TopicARN, "topic-arn", "", "topic ARN named in the SNS envelope")
	region := fs.String("region", "", "AWS region (default $AWS_REGION or us-east-1)")
	s3Endpoint := fs.String("s3-endpoint", "", "S3 endpoint override")
	pathStyle := fs.Bool("s3-path-style", false, "path-style S3 addressing")
	sqsEndpoint := fs.String("sqs-endpoint", "", "SQS endpoint override")
	snsEndpoint := fs.String("sns-endpoint", "", "SNS endpoint override (fauxqs: its SQS endpoint)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("publish needs exactly one version directory after the flags")
	}
	o.Dir = fs.Arg(0)
	s3c, sqsc, err := modelsync.AWSClients(ctx, *region, *s3Endpoint, *pathStyle, *sqsEndpoint)
	if err != nil {
		return err
	}
	clients := publish.PublishClients{S3: s3c, SQS: sqsc}
	if o.Topic != "" {
		if clients.SNS, err = modelsync.SNSClient(ctx, *region, *snsEndpoint); err != nil {
			return err
		}
	}
	p, err := publish.PublishWith(ctx, clients, o)
	if err != nil {
		return err
	}
	fmt.Printf("published s3://%s/%s size=%d sha256=%s etag=%s\n", o.Bucket, p.Key, p.Size, p.SHA256, p.ETag)
	return nil
}

func history(args []string) error {
	fs := flag.NewFlagSet("history", flag.ContinueOnError)
	base := fs.String("base-path", "", "the sidecar's base path (journal in <base-path>/.modelsync)")
	state := fs.String("state-dir", "", "the sidecar's state directory (overrides -base-path)")
	var f journal.Filter
	fs.StringVar(&f.Model, "model", "", "only this model")
	outcomes := fs.String("outcome", "", "comma-separated outcomes: published,duplicate,conflict,rejected,failed,abandoned,ignored")
	since := fs.String("since", "", "entries at or after: RFC 3339 or a duration ago (24h)")
	until := fs.String("until", "", "entries at or before: RFC 3339 or a duration ago")
	fs.StringVar(&f.Sort, "sort", "time", "time, duration, bytes or model")
	fs.BoolVar(&f.Desc, "desc", false, "reverse the order")
	fs.IntVar(&f.Limit, "limit", 0, "at most this many entries (0: all)")
	asJSON := fs.Bool("json", false, "print JSON lines")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dir := *state
	if dir == "" {
		if *base == "" {
			return errors.New("history needs -state-dir or -base-path")
		}
		dir = *base + "/.modelsync"
	}
	if *outcomes != "" {
		f.Outcome = strings.Split(*outcomes, ",")
	}
	now := time.Now()
	var err1, err2 error
	f.Since, err1 = parseTime(*since, now)
	f.Until, err2 = parseTime(*until, now)
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	entries, bad, err := journal.Query(dir, f)
	if err != nil {
		return err
	}
	if bad > 0 {
		fmt.Fprintf(os.Stderr, "modelsync: skipped %d unreadable journal lines\n", bad)
	}
	return writeHistory(os.Stdout, entries, *asJSON)
}

func extractCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("extract", flag.ContinueOnError)
	cfg := modelsync.DefaultConfig()
	root := fs.String("root", "", "version directory name the archive may be rooted at")
	gz := fs.String("gzip", cfg.Gzip, "klauspost or std")
	fsync := fs.Bool("fsync", false, "fsync files and directories, as the sidecar does")
	include := fs.String("include", "", "comma-separated top-level directories to extract (default all)")
	fs.IntVar(&cfg.Limits.MaxEntries, "max-entries", cfg.Limits.MaxEntries, "most entries")
	fs.Int64Var(&cfg.Limits.MaxEntryBytes, "max-entry-bytes", cfg.Limits.MaxEntryBytes, "largest file")
	fs.Int64Var(&cfg.Limits.MaxTotalBytes, "max-total-bytes", cfg.Limits.MaxTotalBytes, "largest total")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return errors.New("extract needs ARCHIVE and an existing empty DIR")
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	defer f.Close()
	dec, err := extract.DecompressorByName(*gz)
	if err != nil {
		return fmt.Errorf("-%w", err)
	}
	opts := extract.Options{Limits: cfg.Limits, Root: *root, Sync: *fsync, Gzip: dec}
	if *include != "" {
		opts.Include = strings.Split(*include, ",")
	}
	start := time.Now()
	st, err := extract.Extract(ctx, f, fs.Arg(1), opts)
	if err != nil {
		return err
	}
	el := time.Since(start)
	fmt.Printf("extracted %d files, %d bytes in %.3fs (%.1f MB/s)\n", st.Files, st.Bytes, el.Seconds(), float64(st.Bytes)/el.Seconds()/1e6)
	return nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
