package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tfgate/tfgate/gateway/discovery"
	"github.com/tfgate/tfgate/gateway/exposure"
	"github.com/tfgate/tfgate/gateway/hosts"
	"github.com/tfgate/tfgate/gateway/route"
	"github.com/tfgate/tfgate/internal/grpcserve"
	"github.com/tfgate/tfgate/internal/telemetry"
	"github.com/tfgate/tfgate/internal/tlsconfig"
	"github.com/tfgate/tfgate/preprocess"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// Defaults for [RunConfig].
const (
	// DefaultListen is the gateway's gRPC address.
	DefaultListen = ":9500"
	// DefaultAdminListen is the admin HTTP address cmd/gateway uses: loopback only,
	// since the admin port can serve pprof and the status page. Deployments that probe
	// or scrape it set --admin-listen to the pod's or host's address.
	DefaultAdminListen = "127.0.0.1:9501"
	// DefaultMaxMsgSize is the default receive and send limit of the gateway's
	// server, far above grpc-go's 4 MiB (large embedding outputs exceed it).
	DefaultMaxMsgSize = 64 << 20
	// DefaultShutdownTimeout bounds the graceful part of shutdown.
	DefaultShutdownTimeout = 30 * time.Second
	// DefaultReadyTimeout bounds the wait for the first readiness poll at start.
	DefaultReadyTimeout = 10 * time.Second
	// DefaultStartupGrace bounds how long /readyz waits for start-up to settle.
	DefaultStartupGrace = 2 * time.Minute
	// DefaultPipelineCacheBytes is RunConfig.PipelineCacheBytes's default.
	DefaultPipelineCacheBytes = preprocess.DefaultCacheBytes
	// DefaultStreamWorkers is how many goroutines serve streams (see
	// RunConfig.StreamWorkers).
	DefaultStreamWorkers = 256

	// flowControlWindow is the HTTP/2 stream and connection window of the
	// gateway's server and of its backend connections: grpc-go's upper bound for
	// the windows its BDP estimator grows, set statically. A static window turns
	// the estimator off, and with it the PING grpc-go sends (and the PING ACK
	// the peer answers) each time data arrives while no estimate is in flight:
	// on a proxy at moderate load that is nearly every request on both hops
	// (measured at 300 req/s: 4.8 -> 3.9 writes and 4.8 -> 2.8 reads per request).
	flowControlWindow = 16 << 20
)

// RunConfig is the gateway process's configuration (cmd/gateway's flags).
type RunConfig struct {
	// Listen is the gRPC listen address. Default ":9500".
	Listen string
	// ConfigPath is the routing config file (with its backends: section). Required.
	ConfigPath string
	// ModelRoot is the model base path holding <model>/<version>/assets.extra/
	// tfgate-preprocess.json (the tree modelsync maintains). Required.
	ModelRoot string
	// SpecPollInterval is how often ModelRoot is scanned. Default: preprocess's (2s).
	SpecPollInterval time.Duration
	// PipelineCacheBytes bounds the compiled preprocessing pipelines kept in
	// memory (estimated bytes, shared vocabularies counted once), cached by spec
	// content hash; the least recently used beyond it are compiled again from
	// the model root when next needed. Default DefaultPipelineCacheBytes (64 MiB).
	PipelineCacheBytes int64
	// MaxRecvMsgSize and MaxSendMsgSize bound the gateway server's messages, bytes.
	// Default 64 MiB each.
	MaxRecvMsgSize, MaxSendMsgSize int
	// ShutdownTimeout bounds finishing in-flight calls and flushing batches at
	// shutdown; then remaining calls are cancelled. Default 30s.
	ShutdownTimeout time.Duration
	// ReadyTimeout bounds the wait for the first readiness poll before serving.
	// Default 10s.
	ReadyTimeout time.Duration
	// ListenerTLS secures the gRPC listener (TLS or mTLS from PEM files, or
	// plaintext with Insecure). Its files are re-read when they change (checked
	// every ReloadInterval) and on every Deps.Reload (SIGHUP). Nil: Run adds no
	// credentials of its own (Deps.ServerOptions may; otherwise plaintext).
	ListenerTLS *tlsconfig.Config
	// BackendTLS secures the calls to TF Serving, reloaded like ListenerTLS.
	// Nil: Run adds no credentials of its own (Deps.DialOptions may; otherwise
	// plaintext).
	BackendTLS *tlsconfig.Config
	// AdminListen is the admin HTTP server's address: /metrics, /healthz and
	// /readyz (see [Readiness]). Default: none (no admin server unless
	// Deps.AdminListener is set).
	AdminListen string
	// Pprof serves /debug/pprof/ on the admin server. Default false.
	Pprof bool
	// StartupGrace is how long after start /readyz waits for start-up to settle
	// (every host's first answer about every model, and the signature checks of
	// what they serve); after it, any routable version makes the gateway ready.
	// Default 2m.
	StartupGrace time.Duration
	// StreamWorkers is the number of long-lived goroutines that run handlers
	// (grpc.NumStreamWorkers). A stream arriving while every worker is busy gets
	// a fresh goroutine, whose stack then grows through the handler's depth again
	// (runtime.copystack): a handler blocks for the whole backend call, so this
	// must cover the calls in flight, not the cores. Idle workers cost only their
	// (shrunk) stacks. Default 256; negative: a goroutine per stream.
	StreamWorkers int
	// Consul, when set, registers the gateway in Consul (with a gRPC health
	// check) once it serves and deregisters it as soon as shutdown starts. An
	// empty Addr registers the listener's address; CheckTLS is turned on when
	// ListenerTLS serves TLS. Default: not registered.
	Consul *discovery.Registration
	// Exposure, when set, writes the exposure log (package gateway/exposure):
	// opened at start (an unwritable path fails Run), flushed at shutdown
	// after the last request. Default: none.
	Exposure *exposure.Config
	// SplitWindow is the sliding window of the live SRM test of every
	// experiment (package gateway/split). Default 10m.
	SplitWindow time.Duration
	// Placement, when set, runs placement in this gateway (placement.go): a
	// controller, demand reports, and cold-start holding of requests for
	// versions no host has. Default: off.
	Placement *PlacementConfig
	// Server holds the remaining server options (ConfigPath, Backends, Specs,
	// Logger and MeterProvider are set by Run).
	Server Options
}

// Deps are Run's injected dependencies; all optional.
type Deps struct {
	Logger *slog.Logger
	// Telemetry, when set, supplies the meter and tracer providers (unless
	// MeterProvider or TracerProvider is set), the admin server's /metrics
	// registry, the otelgrpc stats handlers and request-id propagation on the
	// server and the backend connections (readiness polls left untraced), and
	// the request-duration metric and access log interceptors.
	Telemetry *telemetry.Providers
	// MeterProvider; nil is Telemetry's, else a no-op.
	MeterProvider metric.MeterProvider
	// TracerProvider traces requests through the server, batching and backend
	// calls; nil is Telemetry's, else a no-op.
	TracerProvider trace.TracerProvider
	// Listener, when set, is served instead of listening on RunConfig.Listen.
	Listener net.Listener
	// AdminListener, when set, is the admin server's instead of listening on
	// RunConfig.AdminListen.
	AdminListener net.Listener
	// Reload receives a value for each SIGHUP: re-read the routing config and
	// the certificate files (RunConfig.ListenerTLS, BackendTLS) now.
	Reload <-chan os.Signal
	// Started, when set, is called with the server's address once it serves.
	Started func(addr net.Addr, s *Server)
	// ServerOptions are added to the gRPC server's (interceptors; transport
	// credentials unless RunConfig.ListenerTLS is set).
	ServerOptions []grpc.ServerOption
	// DialOptions are added to every backend connection's (transport
	// credentials unless RunConfig.BackendTLS is set).
	DialOptions []grpc.DialOption
	// WrapBackends, when set, wraps the hosts manager (tests observe or alter
	// backend calls with it).
	WrapBackends func(Backends) Backends
	// Register keeps RunConfig.Consul registered until its context ends, then
	// deregisters it. Default: discovery.KeepRegistered.
	Register func(ctx context.Context, r discovery.Registration, log *slog.Logger) error
	// Now is the clock StartupGrace is measured on. Default: time.Now.
	Now func() time.Time
}

// Run runs the gateway until ctx is cancelled: the admin server (from the
// start, answering /readyz "starting" until the gateway serves), the spec store
// and the hosts manager, the gRPC server, the certificate sources and the
// Consul registration. Then it shuts down in order: the registration is removed
// and the admin server stops, health turns NOT_SERVING, the gRPC server stops
// accepting and finishes in-flight calls (up to ShutdownTimeout), batches are
// flushed, watchers and pollers stop, backend connections close. It returns nil
// after a clean shutdown.
func Run(ctx context.Context, cfg RunConfig, deps Deps) (err error) {
	if cfg.ConfigPath == "" || cfg.ModelRoot == "" {
		return errors.New("gateway: the routing config path and the model root are required")
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.MaxRecvMsgSize <= 0 {
		cfg.MaxRecvMsgSize = DefaultMaxMsgSize
	}
	if cfg.MaxSendMsgSize <= 0 {
		cfg.MaxSendMsgSize = DefaultMaxMsgSize
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = DefaultReadyTimeout
	}
	if cfg.StartupGrace <= 0 {
		cfg.StartupGrace = DefaultStartupGrace
	}
	if cfg.StreamWorkers == 0 {
		cfg.StreamWorkers = DefaultStreamWorkers
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.Register == nil {
		deps.Register = discovery.KeepRegistered
	}
	startedAt := deps.Now()
	tel := newRunTelemetry(deps, log)

	// The backends section is read once, at start.
	first, err := route.Load(cfg.ConfigPath, nil)
	if err != nil {
		return err
	}
	if first.Backends.Kind == 0 {
		return fmt.Errorf("%s: backends: missing; add a backends: section with at least one pool", cfg.ConfigPath)
	}
	certs, err := newCertSources(cfg, log, tel.mp)
	if err != nil {
		return err
	}
	defer certs.close()

	// The admin server answers from the start: /readyz says "starting" until
	// the gateway serves.
	var serving atomic.Pointer[Server]
	adminCtx, stopAdmin := context.WithCancel(ctx)
	defer stopAdmin()
	ready := func() error {
		return Readiness(serving.Load(), deps.Now().Sub(startedAt) >= cfg.StartupGrace)
	}
	page := newStatusPage(serving.Load, ready, deps.Now, log)
	adminDone, err := startAdmin(adminCtx, cfg, deps, tel, log, ready, page)
	if err != nil {
		return err
	}
	defer func() { stopAdmin(); err = errors.Join(err, <-adminDone) }()

	dialOpts := append([]grpc.DialOption{
		grpc.WithStaticStreamWindowSize(flowControlWindow), grpc.WithStaticConnWindowSize(flowControlWindow),
		// hosts.Manager retries on another host itself; grpc-go's own retry layer
		// would only buffer every request for a replay that never comes.
		grpc.WithDisableRetry(),
		// Predict outputs stay encoded for the raw path to pass on (codec.go).
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(newBackendCodec())),
	}, tel.dialOpts...)
	dialOpts = append(dialOpts, deps.DialOptions...)
	if certs.backends != nil {
		dialOpts = append(dialOpts, grpc.WithTransportCredentials(certs.backends.Credentials()))
	}
	mgr, err := hosts.New(first.Hosts, hosts.Options{Logger: log, MeterProvider: tel.mp, DialOptions: dialOpts})
	if err != nil {
		return err
	}
	mgr.SetModels(first.ModelNames())
	page.setHosts(mgr)
	store := preprocess.NewStore(cfg.ModelRoot, preprocess.StoreOptions{PollInterval: cfg.SpecPollInterval, Logger: log, MeterProvider: tel.mp,
		CacheBytes: cfg.PipelineCacheBytes})

	bg, stopBg := context.WithCancel(context.Background())
	defer stopBg()
	var workers errgroup.Group
	workers.Go(func() error { return mgr.Run(bg) })
	workers.Go(func() error { return store.Run(bg) })
	// The certificate files are checked on a timer too, so that a broken file
	// is reported even while no one connects.
	for _, src := range certs.all() {
		workers.Go(func() error { return src.Run(bg) })
	}
	stop := func() error { stopBg(); return workers.Wait() }

	if err := waitStart(ctx, cfg.ReadyTimeout, store, mgr, log, cfg.ModelRoot); err != nil {
		_ = stop()
		return err
	}
	opts := cfg.Server
	opts.ConfigPath, opts.Backends, opts.Specs = cfg.ConfigPath, HostBackends{mgr}, StoreSpecs{store}
	opts.BackendsReady = mgr.Ready()
	if deps.WrapBackends != nil {
		opts.Backends = deps.WrapBackends(opts.Backends)
	}
	opts.Logger, opts.MeterProvider, opts.TracerProvider = log, tel.mp, tel.tp
	if opts.MaxBackendMessageBytes == 0 {
		opts.MaxBackendMessageBytes = first.Hosts.MaxSendMsgSize
	}
	exps, err := startExperiments(cfg, &opts)
	if err != nil {
		_ = stop()
		return err
	}
	defer func() { err = errors.Join(err, exps.close(cfg.ShutdownTimeout)) }()
	opts.placement = cfg.Placement != nil
	srv, err := New(opts)
	if err != nil {
		_ = stop()
		return err
	}
	exps.serve(srv)
	if cfg.Placement != nil {
		if err := startPlacement(ctx, *cfg.Placement, first, srv, mgr.SetPlacement, &workers, bg, log, tel.mp); err != nil {
			_ = srv.Close(context.Background())
			_ = stop()
			return err
		}
	}
	workers.Go(func() error { return srv.Run(bg) })

	serverOpts := append([]grpc.ServerOption{
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgSize),
		grpc.MaxSendMsgSize(cfg.MaxSendMsgSize),
		grpc.ForceServerCodecV2(srv.codec),
		grpc.StaticStreamWindowSize(flowControlWindow), grpc.StaticConnWindowSize(flowControlWindow),
	}, tel.serverOpts...)
	if cfg.StreamWorkers > 0 {
		// Serve streams on long-lived goroutines instead of a new one per
		// request, whose stack grows afresh every time (7% of the CPU at
		// saturation with GOMAXPROCS workers, which a blocking handler keeps busy).
		serverOpts = append(serverOpts, grpc.NumStreamWorkers(uint32(cfg.StreamWorkers)))
	}
	serverOpts = append(serverOpts, deps.ServerOptions...)
	if certs.listener != nil {
		serverOpts = append(serverOpts, grpc.Creds(certs.listener.Credentials()))
	}
	gs := grpc.NewServer(serverOpts...)
	gs.RegisterService(serviceDesc(), srv) // with srv.codec: decode errors reach Predict
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(tfgatev1.GatewayService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	registerReflection(gs, log)

	lis := deps.Listener
	if lis == nil {
		if lis, err = net.Listen("tcp", cfg.Listen); err != nil {
			_ = srv.Close(context.Background())
			_ = stop()
			return fmt.Errorf("gateway: listen: %w", err)
		}
	}
	served := make(chan error, 1)
	go func() { served <- gs.Serve(lis) }()
	log.Info("gateway: serving", "addr", lis.Addr().String(), "config", cfg.ConfigPath, "model_root", cfg.ModelRoot)
	serving.Store(srv)
	if deps.Started != nil {
		deps.Started(lis.Addr(), srv)
	}

	// Registered while serving; deregistered as soon as shutdown starts.
	regCtx, stopReg := context.WithCancel(ctx)
	defer stopReg()
	regDone := make(chan error, 1)
	if cfg.Consul != nil {
		reg := *cfg.Consul
		if reg.Addr == "" {
			reg.Addr = lis.Addr().String()
		}
		// The check speaks TLS when the listener does (Consul must trust its CA).
		reg.CheckTLS = reg.CheckTLS || (cfg.ListenerTLS != nil && !cfg.ListenerTLS.Insecure)
		go func() { regDone <- deps.Register(regCtx, reg, log) }()
	} else {
		regDone <- nil
	}

	var serveErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-served:
			serveErr = fmt.Errorf("gateway: serve: %w", err)
			served <- nil
			break loop
		case <-deps.Reload:
			log.Info("gateway: SIGHUP: reloading the routing config and the certificates")
			_ = srv.Reload()   // a failure is logged and counted; the last good config serves
			_ = certs.reload() // likewise: the last good certificates serve
		}
	}

	// Shutdown, in order.
	log.Info("gateway: shutting down")
	stopReg()
	stopAdmin()
	hs.Shutdown()
	if !grpcserve.Stop(gs, cfg.ShutdownTimeout) {
		log.Warn("gateway: in-flight calls did not finish in time; they were cancelled", "timeout", cfg.ShutdownTimeout)
	}
	<-served
	cctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	closeErr := srv.Close(cctx)
	cancel()
	stopErr := stop()
	return errors.Join(serveErr, closeErr, stopErr, <-regDone)
}

// waitStart waits for the first spec scan and (bounded) for the first readiness
// poll, so that the first routing snapshot already knows what is routable.
func waitStart(ctx context.Context, readyTimeout time.Duration, store *preprocess.Store, mgr *hosts.Manager, log *slog.Logger, root string) error {
	t := time.NewTicker(readyTimeout)
	defer t.Stop()
	for waiting := true; waiting; {
		select {
		case <-store.Ready():
			waiting = false
		case <-t.C:
			log.Warn("gateway: waiting for the model root to become readable before serving", "model_root", root)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	rctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	if err := mgr.WaitReady(rctx); err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return nil
}

// certSources are the TLS sources Run owns: the listener's and the backends'
// (each nil when RunConfig leaves it to Deps).
type certSources struct {
	listener, backends *tlsconfig.Source
}

func newCertSources(cfg RunConfig, log *slog.Logger, mp metric.MeterProvider) (certSources, error) {
	var c certSources
	var err error
	if cfg.ListenerTLS != nil {
		if c.listener, err = tlsconfig.NewServer(*cfg.ListenerTLS, tlsconfig.Options{Name: "listener", Logger: log, MeterProvider: mp}); err != nil {
			return c, fmt.Errorf("gateway: listener TLS: %w", err)
		}
	}
	if cfg.BackendTLS != nil {
		if c.backends, err = tlsconfig.NewClient(*cfg.BackendTLS, tlsconfig.Options{Name: "backends", Logger: log, MeterProvider: mp}); err != nil {
			c.close()
			return certSources{}, fmt.Errorf("gateway: backend TLS: %w", err)
		}
	}
	return c, nil
}

func (c certSources) all() []*tlsconfig.Source {
	var out []*tlsconfig.Source
	for _, s := range []*tlsconfig.Source{c.listener, c.backends} {
		if s != nil {
			out = append(out, s)
		}
	}
	return out
}

// reload re-reads every source's files now (SIGHUP). A failure keeps that
// source's last good material; it is logged and counted by the source.
func (c certSources) reload() error {
	var errs []error
	for _, s := range c.all() {
		errs = append(errs, s.Reload())
	}
	return errors.Join(errs...)
}

func (c certSources) close() {
	for _, s := range c.all() {
		_ = s.Close()
	}
}
