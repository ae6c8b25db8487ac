// Command gateway serves tfgate's typed prediction API in front of TF Serving.
//
//	gateway --config routes.yaml --model-root /models [--listen :9500] [--admin-listen 127.0.0.1:9501]
//	        (--tls-cert F --tls-key F [--tls-client-ca F [--tls-allowed-subjects S,...]] | --insecure)
//	        (--backend-tls-ca F [--backend-tls-cert F --backend-tls-key F] | --backend-insecure)
//
// TLS is required on the listener and towards TF Serving unless --insecure or
// --backend-insecure choose plaintext explicitly; certificate files are
// re-read when they change (no restart).
//
// SIGHUP re-reads the routing config and the certificate files (both are also
// watched); SIGINT or SIGTERM shut down gracefully: stop accepting, finish
// in-flight calls, flush batches, close backend connections. Telemetry follows
// the OTEL_* environment variables; the admin server serves /metrics, /healthz
// and /readyz.
//
// Everything but flag parsing lives in gateway.Run.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/tfgate/tfgate/gateway"
	"github.com/tfgate/tfgate/gateway/discovery"
	"github.com/tfgate/tfgate/internal/telemetry"
	"github.com/tfgate/tfgate/internal/tlsconfig"
)

func main() {
	if err := run(os.Args[1:]); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	cfg, logCfg, gc, err := parseFlags(args, os.Stderr)
	if err != nil {
		return err
	}
	headroom, err := gc.apply(os.Getenv)
	if err != nil {
		return err
	}
	log, err := telemetry.NewLogger(os.Stderr, logCfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if headroom > 0 {
		go runHeadroom(ctx, headroom)
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	prov, _, err := telemetry.FromEnv(ctx, "tfgate-gateway")
	if err != nil {
		return err
	}
	prov.RPCSizeMetrics = gc.rpcSizeMetrics
	defer prov.Close(5 * time.Second)
	return gateway.Run(ctx, cfg, gateway.Deps{Logger: log, Telemetry: prov, Reload: hup})
}

// parseFlags turns the command line into the gateway's configuration and the
// log settings, checking what the flags alone decide.
func parseFlags(args []string, out io.Writer) (gateway.RunConfig, telemetry.LogConfig, gcSettings, error) {
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(out)
	var cfg gateway.RunConfig
	var logCfg telemetry.LogConfig
	var gc gcSettings
	fs.StringVar(&cfg.ConfigPath, "config", "", "routing config file (YAML; required)")
	fs.StringVar(&cfg.ModelRoot, "model-root", "", "model base path holding <model>/<version>/assets.extra/tfgate-preprocess.json (required)")
	fs.StringVar(&cfg.Listen, "listen", gateway.DefaultListen, "gRPC listen address")
	fs.IntVar(&cfg.MaxRecvMsgSize, "max-recv-msg-size", gateway.DefaultMaxMsgSize, "largest request accepted, bytes")
	fs.IntVar(&cfg.MaxSendMsgSize, "max-send-msg-size", gateway.DefaultMaxMsgSize, "largest response sent, bytes")
	fs.DurationVar(&cfg.SpecPollInterval, "spec-poll-interval", 2*time.Second, "how often the model root is scanned for new versions")
	fs.Int64Var(&cfg.PipelineCacheBytes, "pipeline-cache-bytes", gateway.DefaultPipelineCacheBytes, "memory for compiled preprocessing pipelines, bytes (cached by spec content, least recently used recompiled from the model root when needed)")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", gateway.DefaultShutdownTimeout, "how long in-flight calls may take to finish at shutdown")
	fs.DurationVar(&cfg.Server.WatchInterval, "config-poll-interval", gateway.DefaultWatchInterval, "how often the routing config file is checked for changes (negative: only SIGHUP)")
	fs.DurationVar(&cfg.Server.DeadlineMargin, "deadline-margin", gateway.DefaultDeadlineMargin, "kept back from the caller's deadline for the backend call")
	fs.StringVar(&cfg.AdminListen, "admin-listen", gateway.DefaultAdminListen, "admin HTTP address (/metrics, /healthz, /readyz); loopback by default; empty disables")
	fs.DurationVar(&cfg.StartupGrace, "startup-grace", gateway.DefaultStartupGrace, "how long after start /readyz waits for every host's first answer about every model and for the signature checks of what they serve (then: ready on any routable version)")
	fs.BoolVar(&cfg.Pprof, "pprof", false, "serve /debug/pprof/ on the admin server")
	fs.IntVar(&cfg.StreamWorkers, "stream-workers", gateway.DefaultStreamWorkers, "goroutines kept to run requests (cover the calls in flight; a request beyond them starts a new goroutine); negative: one goroutine per request")
	fs.StringVar(&gc.gogc, "gogc", "", fmt.Sprintf("GC target percentage, or off (default: GOGC from the environment, else %d)", defaultGOGC))
	fs.BoolVar(&gc.rpcSizeMetrics, "rpc-size-metrics", telemetry.RPCSizeMetricsDefault, "record the rpc.{server,client}.{request,response}.size histograms (about 2.5% of the gateway's CPU per request)")
	fs.StringVar(&gc.headroom, "gc-headroom", "", "with no memory limit set (--gomemlimit, GOMEMLIMIT, cgroup): how far the heap may grow above the live heap between collections, e.g. 128MiB, or off (default 80MiB; below 20 MiB of live heap GOGC 400 governs)")
	fs.StringVar(&gc.memLimit, "gomemlimit", "", "soft memory limit, e.g. 2GiB, or off (default: GOMEMLIMIT from the environment, else 90% of the cgroup's memory.max when set)")
	fs.StringVar(&logCfg.Format, "log-format", "json", "log format: json or text")
	fs.StringVar(&logCfg.Level, "log-level", "info", "log level: debug, info, warn, error")
	consulRegister := fs.Bool("consul-register", false, "register this gateway in Consul (agent from CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, ...) with a gRPC health check while it serves")
	consulRegAddr := fs.String("consul-register-addr", "", "host:port to register (default: the listen address; a wildcard host registers the agent's node address)")
	consulService := fs.String("consul-service", "tfgate-gateway", "Consul service name for --consul-register")
	exposureFlags(fs, &cfg)
	placementOn := placementFlags(fs)
	var lt, bt tlsconfig.Config
	fs.StringVar(&lt.CertFile, "tls-cert", "", "PEM certificate chain of the gRPC listener")
	fs.StringVar(&lt.KeyFile, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&lt.CAFile, "tls-client-ca", "", "PEM CA bundle client certificates must chain to (turns on mTLS)")
	fs.StringVar(&lt.ClientAuth, "tls-client-auth", "", "none, verify-if-given or require (default: require with --tls-client-ca, else none)")
	subjects := fs.String("tls-allowed-subjects", "", "comma-separated client identities accepted (subject DN, CN, DNS/URI/email SAN); default any that chains to --tls-client-ca")
	fs.BoolVar(&lt.Insecure, "insecure", false, "serve plaintext gRPC (only when TLS is terminated elsewhere)")
	fs.StringVar(&bt.CAFile, "backend-tls-ca", "", "PEM CA bundle TF Serving's certificates must chain to (default: system roots)")
	fs.StringVar(&bt.CertFile, "backend-tls-cert", "", "PEM client certificate for TF Serving (mTLS)")
	fs.StringVar(&bt.KeyFile, "backend-tls-key", "", "PEM private key of --backend-tls-cert")
	fs.StringVar(&bt.ServerName, "backend-tls-server-name", "", "name verified in TF Serving's certificates (default: the host dialled)")
	fs.BoolVar(&bt.Insecure, "backend-insecure", false, "call TF Serving in plaintext (stock TF Serving without --ssl_config_file)")
	tlsReload := fs.Duration("tls-reload-interval", tlsconfig.DefaultReloadInterval, "how often certificate files are checked for changes")
	if err := fs.Parse(args); err != nil {
		return cfg, logCfg, gc, err
	}
	if cfg.ConfigPath == "" || cfg.ModelRoot == "" {
		fs.Usage()
		return cfg, logCfg, gc, errors.New("--config and --model-root are required")
	}
	if *subjects != "" {
		lt.AllowedSubjects = strings.Split(*subjects, ",")
	}
	lt.ReloadInterval, bt.ReloadInterval = *tlsReload, *tlsReload
	if err := lt.ValidateServer(); err != nil {
		return cfg, logCfg, gc, fmt.Errorf("listener TLS (--tls-cert/--tls-key, or --insecure): %w", err)
	}
	if err := bt.ValidateClient(); err != nil {
		return cfg, logCfg, gc, fmt.Errorf("backend TLS (--backend-tls-*, or --backend-insecure): %w", err)
	}
	cfg.ListenerTLS, cfg.BackendTLS = &lt, &bt
	if *consulRegister {
		cfg.Consul = &discovery.Registration{Name: *consulService, Addr: *consulRegAddr}
	}
	cfg.Placement = placementOn()
	return cfg, logCfg, gc, nil
}
