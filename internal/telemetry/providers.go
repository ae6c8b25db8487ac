package telemetry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/exporters/stdout/stdoutmetric"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// Providers are what a binary injects into its packages. The zero value is not
// usable; build one with [New] or [NewNoop].
type Providers struct {
	// TracerProvider creates tracers; never nil.
	TracerProvider trace.TracerProvider
	// MeterProvider creates meters; never nil.
	MeterProvider metric.MeterProvider
	// Propagator injects and extracts trace context (W3C traceparent/tracestate
	// and baggage by default); never nil.
	Propagator propagation.TextMapPropagator
	// Registry is this process's own Prometheus registry (never the global
	// default): the OpenTelemetry metrics plus Go runtime and process metrics.
	Registry *prometheus.Registry
	// RPCSizeMetrics makes the otelgrpc handlers ([Providers.ServerHandler],
	// [Providers.ClientHandler]) record the message size histograms
	// rpc.{server,client}.{request,response}.size; the call duration histograms
	// are always recorded. Default (New): RPCSizeMetricsDefault.
	RPCSizeMetrics bool

	shutdown []func(context.Context) error
}

// RPCSizeMetricsDefault is [Providers.RPCSizeMetrics] as New sets it: off,
// since recording four size histograms per proxied call measured 2.6% of the
// gateway's CPU at saturation (the duration histograms stay).
const RPCSizeMetricsDefault = false

// Options are the programmatic additions to a [Config].
type Options struct {
	// SpanProcessors are added to the tracer provider after the configured
	// exporter (tests: sdktrace.NewSimpleSpanProcessor(tracetest.NewInMemoryExporter())).
	// Default: none.
	SpanProcessors []sdktrace.SpanProcessor
	// MetricReaders are added to the meter provider besides Prometheus (tests:
	// sdkmetric.NewManualReader()). Default: none.
	MetricReaders []sdkmetric.Reader
}

// NewNoop returns providers that record nothing, with an empty registry.
func NewNoop() *Providers {
	return &Providers{
		TracerProvider: tracenoop.NewTracerProvider(),
		MeterProvider:  metricnoop.NewMeterProvider(),
		Propagator:     propagation.NewCompositeTextMapPropagator(),
		Registry:       prometheus.NewRegistry(),
	}
}

// New builds the providers cfg describes. The OTLP exporters connect lazily, so
// New does not fail when the collector is down; spans and metrics that cannot
// be delivered are dropped and reported by the exporter.
func New(ctx context.Context, cfg Config, opts Options) (*Providers, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if cfg.Disabled {
		return NewNoop(), nil
	}
	if cfg.Console == nil {
		cfg.Console = os.Stdout
	}
	p := &Providers{Registry: prometheus.NewRegistry(), Propagator: newPropagator(cfg.Propagators), RPCSizeMetrics: RPCSizeMetricsDefault}
	fail := func(err error) (*Providers, error) {
		_ = p.Shutdown(context.Background())
		return nil, err
	}
	if err := p.Registry.Register(collectors.NewGoCollector()); err != nil {
		return fail(fmt.Errorf("telemetry: go collector: %w", err))
	}
	if err := p.Registry.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return fail(fmt.Errorf("telemetry: process collector: %w", err))
	}

	attrs := []attribute.KeyValue{attribute.String("service.name", cfg.ServiceName)}
	if cfg.ServiceVersion != "" {
		attrs = append(attrs, attribute.String("service.version", cfg.ServiceVersion))
	}
	for _, a := range cfg.ResourceAttributes {
		if a.Key != "service.name" || cfg.ServiceName == "" {
			attrs = append(attrs, a)
		}
	}
	res := resource.NewSchemaless(attrs...)

	// Traces.
	tpOpts := []sdktrace.TracerProviderOption{
		sdktrace.WithResource(res),
		sdktrace.WithSampler(newSampler(cfg.Sampler, cfg.SamplerArg)),
	}
	switch cfg.Traces {
	case ExporterOTLP:
		exp, err := otlptracegrpc.New(ctx)
		if err != nil {
			return fail(fmt.Errorf("telemetry: otlp trace exporter: %w", err))
		}
		tpOpts = append(tpOpts, sdktrace.WithBatcher(exp))
	case ExporterConsole:
		exp, err := stdouttrace.New(stdouttrace.WithWriter(cfg.Console))
		if err != nil {
			return fail(fmt.Errorf("telemetry: stdout trace exporter: %w", err))
		}
		tpOpts = append(tpOpts, sdktrace.WithBatcher(exp))
	}
	for _, sp := range opts.SpanProcessors {
		tpOpts = append(tpOpts, sdktrace.WithSpanProcessor(sp))
	}
	if cfg.Traces != ExporterOTLP && cfg.Traces != ExporterConsole && len(opts.SpanProcessors) == 0 {
		// Nothing would receive the spans: give them ids and sampling decisions
		// (logs and traceparent stay as they were) without recording them.
		p.TracerProvider = newIDOnlyProvider(cfg.Sampler, cfg.SamplerArg)
	} else {
		tp := sdktrace.NewTracerProvider(tpOpts...)
		p.TracerProvider = tp
		p.shutdown = append(p.shutdown, tp.Shutdown)
	}

	// Metrics: Prometheus always, plus push exporters.
	promExp, err := otelprom.New(otelprom.WithRegisterer(p.Registry))
	if err != nil {
		return fail(fmt.Errorf("telemetry: prometheus exporter: %w", err))
	}
	mpOpts := []sdkmetric.Option{sdkmetric.WithResource(res), sdkmetric.WithReader(promExp)}
	for _, m := range cfg.Metrics {
		var exp sdkmetric.Exporter
		switch m {
		case ExporterOTLP:
			exp, err = otlpmetricgrpc.New(ctx)
		case ExporterConsole:
			exp, err = stdoutmetric.New(stdoutmetric.WithWriter(cfg.Console))
		}
		if err != nil {
			return fail(fmt.Errorf("telemetry: %s metric exporter: %w", m, err))
		}
		interval := cfg.MetricInterval
		if interval <= 0 {
			interval = 60e9
		}
		mpOpts = append(mpOpts, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp, sdkmetric.WithInterval(interval))))
	}
	for _, r := range opts.MetricReaders {
		mpOpts = append(mpOpts, sdkmetric.WithReader(r))
	}
	mp := sdkmetric.NewMeterProvider(mpOpts...)
	p.MeterProvider = mp
	p.shutdown = append(p.shutdown, mp.Shutdown)
	return p, nil
}

// FromEnv builds the providers the standard OTEL_* environment describes for
// service, as every tfgate binary does at startup, and returns the Config read.
func FromEnv(ctx context.Context, service string) (*Providers, Config, error) {
	cfg, err := ConfigFromEnv(service, os.Getenv)
	if err != nil {
		return nil, cfg, err
	}
	p, err := New(ctx, cfg, Options{})
	return p, cfg, err
}

// Close is Shutdown bounded by timeout, for a main's defer; errors are dropped
// because the process is exiting.
func (p *Providers) Close(timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_ = p.Shutdown(ctx)
}

// Shutdown flushes pending spans and metrics and stops the exporters. It
// returns every error met.
func (p *Providers) Shutdown(ctx context.Context) error {
	var errs []error
	for i := len(p.shutdown) - 1; i >= 0; i-- {
		if err := p.shutdown[i](ctx); err != nil {
			errs = append(errs, err)
		}
	}
	p.shutdown = nil
	return errors.Join(errs...)
}

func newPropagator(names []string) propagation.TextMapPropagator {
	var ps []propagation.TextMapPropagator
	for _, n := range names {
		switch n {
		case "tracecontext":
			ps = append(ps, propagation.TraceContext{})
		case "baggage":
			ps = append(ps, propagation.Baggage{})
		}
	}
	return propagation.NewCompositeTextMapPropagator(ps...)
}

func newSampler(name string, arg float64) sdktrace.Sampler {
	switch name {
	case "always_on":
		return sdktrace.AlwaysSample()
	case "always_off":
		return sdktrace.NeverSample()
	case "traceidratio":
		return sdktrace.TraceIDRatioBased(arg)
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample())
	case "parentbased_traceidratio":
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(arg))
	default:
		return sdktrace.ParentBased(sdktrace.AlwaysSample())
	}
}
