package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// AdminOptions configure [NewAdmin].
type AdminOptions struct {
	// Gatherer serves /metrics (normally Providers.Registry). Default: an empty
	// registry.
	Gatherer prometheus.Gatherer
	// Ready reports readiness for /readyz: nil error means ready; the error's
	// text is the 503 body, so say what is missing. Default: always ready.
	Ready func(context.Context) error
	// Pprof mounts net/http/pprof under /debug/pprof/. Default: false.
	Pprof bool
	// Logger; nil discards.
	Logger *slog.Logger
	// ShutdownTimeout bounds the graceful stop in Serve. Default: 5s.
	ShutdownTimeout time.Duration
	// Routes are further handlers by http.ServeMux pattern (e.g. "GET /{$}"
	// for the root only); they must not conflict with the routes above.
	// Default: none.
	Routes map[string]http.Handler
}

// Admin is the admin HTTP server: /metrics, /healthz, /readyz, optionally
// /debug/pprof/, and the caller's AdminOptions.Routes.
type Admin struct {
	opts    AdminOptions
	handler http.Handler
}

// NewAdmin builds the admin server.
func NewAdmin(opts AdminOptions) *Admin {
	if opts.Gatherer == nil {
		opts.Gatherer = prometheus.NewRegistry()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 5 * time.Second
	}
	a := &Admin{opts: opts}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(opts.Logger.Handler(), slog.LevelError),
		ErrorHandling: promhttp.ContinueOnError,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", a.readyz)
	if opts.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	for pattern, h := range opts.Routes {
		mux.Handle(pattern, h)
	}
	a.handler = mux
	return a
}

// Handler returns the admin routes (for tests and for mounting elsewhere).
func (a *Admin) Handler() http.Handler { return a.handler }

func (a *Admin) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if a.opts.Ready != nil {
		if err := a.opts.Ready(r.Context()); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintf(w, "not ready: %v\n", err)
			return
		}
	}
	_, _ = w.Write([]byte("ready\n"))
}

// Serve serves on ln until ctx is cancelled, then shuts down gracefully. It
// returns nil after a clean shutdown.
func (a *Admin) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           a.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(a.opts.Logger.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	a.opts.Logger.Info("admin server listening", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("telemetry: admin server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.opts.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("telemetry: admin server shutdown: %w", err)
	}
	return nil
}

// ListenAndServe listens on addr (host:port) and calls Serve.
func (a *Admin) ListenAndServe(ctx context.Context, addr string) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("telemetry: admin listen %s: %w", addr, err)
	}
	return a.Serve(ctx, ln)
}
