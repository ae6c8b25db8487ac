package telemetry

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// ServerHandler is an otelgrpc server stats handler on these providers (never
// the global ones): a server span per RPC continuing the caller's W3C trace
// context, and the OTel RPC metrics (rpc.server.call.duration, request and
// response sizes). Health checks are not traced. When spans go nowhere (no
// exporter or span processor: the id-only provider) it is a [leanHandler]
// instead, which gives the same span contexts and metrics for less CPU.
func (p *Providers) ServerHandler() stats.Handler {
	filter := filters.Not(filters.HealthCheck())
	if t, ok := p.idOnly(); ok {
		return newLeanHandler(p, t, true, filter)
	}
	return otelgrpc.NewServerHandler(
		otelgrpc.WithTracerProvider(p.TracerProvider),
		otelgrpc.WithMeterProvider(p.rpcMeterProvider()),
		otelgrpc.WithPropagators(p.Propagator),
		otelgrpc.WithFilter(filter),
	)
}

// ClientHandler is an otelgrpc client stats handler on these providers: a client
// span per call whose context is injected into the outgoing gRPC metadata
// (traceparent), and rpc.client.call.duration. filter (nil: every call)
// selects the calls that get a span and metrics. A [leanHandler] when spans go
// nowhere, as for ServerHandler.
func (p *Providers) ClientHandler(filter otelgrpc.Filter) stats.Handler {
	if t, ok := p.idOnly(); ok {
		return newLeanHandler(p, t, false, filter)
	}
	opts := []otelgrpc.Option{
		otelgrpc.WithTracerProvider(p.TracerProvider),
		otelgrpc.WithMeterProvider(p.rpcMeterProvider()),
		otelgrpc.WithPropagators(p.Propagator),
	}
	if filter != nil {
		opts = append(opts, otelgrpc.WithFilter(filter))
	}
	return otelgrpc.NewClientHandler(opts...)
}

// idOnly is the id-only tracer when the tracer provider is the one New sets up
// for spans that go nowhere.
func (p *Providers) idOnly() (*idOnlyTracer, bool) {
	if ip, ok := p.TracerProvider.(*idOnlyProvider); ok && p.MeterProvider != nil && p.Propagator != nil {
		return ip.tracer, true
	}
	return nil, false
}

// rpcMeterProvider is the meter provider the otelgrpc handlers get: without
// the message size histograms unless RPCSizeMetrics is set.
func (p *Providers) rpcMeterProvider() metric.MeterProvider {
	if p.RPCSizeMetrics {
		return p.MeterProvider
	}
	return noSizesProvider{p.MeterProvider}
}

// rpcSizeHistograms are otelgrpc's message size histograms.
var rpcSizeHistograms = map[string]bool{
	"rpc.server.request.size": true, "rpc.server.response.size": true,
	"rpc.client.request.size": true, "rpc.client.response.size": true,
}

// noSizesProvider hands out meters whose RPC message size histograms are no-ops;
// every other instrument is the wrapped provider's.
type noSizesProvider struct{ metric.MeterProvider }

func (p noSizesProvider) Meter(name string, opts ...metric.MeterOption) metric.Meter {
	return noSizesMeter{p.MeterProvider.Meter(name, opts...)}
}

type noSizesMeter struct{ metric.Meter }

func (m noSizesMeter) Int64Histogram(name string, opts ...metric.Int64HistogramOption) (metric.Int64Histogram, error) {
	if rpcSizeHistograms[name] {
		return noop.Int64Histogram{}, nil
	}
	return m.Meter.Int64Histogram(name, opts...)
}

// ServerOptions are the grpc.ServerOptions a traced server needs: the stats
// handler and the request-id interceptor.
func (p *Providers) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.StatsHandler(p.ServerHandler()),
		grpc.ChainUnaryInterceptor(UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(StreamServerInterceptor()),
	}
}

// DialOptions are the grpc.DialOptions a traced client needs: the stats handler
// (with filter, nil for every call, e.g. to leave health polls untraced) and
// request-id propagation.
func (p *Providers) DialOptions(filter otelgrpc.Filter) []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithStatsHandler(p.ClientHandler(filter)),
		grpc.WithChainUnaryInterceptor(UnaryClientInterceptor()),
	}
}

// PredictRequest is what [RequestMetrics] reads from a request: the model asked
// for and, when explicit, the version (tfgate.v1.PredictRequest satisfies it).
type PredictRequest interface {
	GetModel() string
	GetVersion() int64
}

// PredictResponse is what [RequestMetrics] reads from a response: the model,
// version and arm that served (tfgate.v1.PredictResponse satisfies it).
type PredictResponse interface {
	GetModel() string
	GetVersion() int64
	GetArm() string
}

// DefaultMaxModels bounds the distinct model label values of [RequestMetrics].
const DefaultMaxModels = 1000

// OtherModel is the model label of requests for models beyond MaxModels.
const OtherModel = "_other"

// RequestMetrics records tfgate.gateway.request.duration (seconds), a histogram
// of unary RPCs by rpc.method, model, version, arm and rpc.response.status_code;
// its _count series is the request count. A failed request carries the version
// it asked for explicitly (or "" when none) and an empty arm.
//
// Per-customer deployments have tens of thousands of models: only the first
// MaxModels distinct model names get their own series, the rest are labelled
// [OtherModel].
type RequestMetrics struct {
	hist      metric.Float64Histogram
	maxModels int64
	nModels   atomic.Int64
	models    sync.Map // string -> struct{}
	// sets holds each series' attribute set, built once. A map under a read
	// lock rather than a sync.Map, whose any-typed key would allocate a copy of
	// the seriesKey on every lookup.
	mu   sync.RWMutex
	sets map[seriesKey]metric.RecordOption
}

type seriesKey struct {
	method, model, arm string
	version            int64
	code               codes.Code
}

// NewRequestMetrics creates the instrument on mp (nil is a no-op). maxModels <= 0
// means [DefaultMaxModels].
func NewRequestMetrics(mp metric.MeterProvider, maxModels int) (*RequestMetrics, error) {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	if maxModels <= 0 {
		maxModels = DefaultMaxModels
	}
	h, err := mp.Meter("github.com/tfgate/tfgate/internal/telemetry").Float64Histogram(
		"tfgate.gateway.request.duration",
		metric.WithUnit("s"),
		metric.WithDescription("Duration of gateway RPCs by method, model, version, arm and gRPC status code, as seen by the server."),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
	)
	if err != nil {
		return nil, err
	}
	return &RequestMetrics{hist: h, maxModels: int64(maxModels)}, nil
}

func (m *RequestMetrics) modelLabel(model string) string {
	if _, ok := m.models.Load(model); ok {
		return model
	}
	if m.nModels.Add(1) > m.maxModels {
		m.nModels.Add(-1)
		return OtherModel
	}
	if _, loaded := m.models.LoadOrStore(model, struct{}{}); loaded {
		m.nModels.Add(-1)
	}
	return model
}

// UnaryServerInterceptor records every unary RPC.
func (m *RequestMetrics) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		m.Record(ctx, info.FullMethod, req, resp, err, time.Since(start))
		return resp, err
	}
}

// Record adds one observation; req and resp may be any message (only
// [PredictRequest] and [PredictResponse] contribute labels).
func (m *RequestMetrics) Record(ctx context.Context, method string, req, resp any, err error, d time.Duration) {
	k := seriesKey{method: method, code: status.Code(err)}
	if r, ok := resp.(PredictResponse); ok && err == nil && r.GetModel() != "" {
		k.model, k.arm, k.version = r.GetModel(), r.GetArm(), r.GetVersion()
	} else if r, ok := req.(PredictRequest); ok {
		k.model, k.version = r.GetModel(), r.GetVersion()
	}
	if k.model != "" {
		k.model = m.modelLabel(k.model)
	}
	m.mu.RLock()
	opt, ok := m.sets[k]
	m.mu.RUnlock()
	if !ok {
		opt = m.series(k)
	}
	m.hist.Record(ctx, d.Seconds(), opt)
}

// series builds and keeps k's attribute set (the first request of a series).
func (m *RequestMetrics) series(k seriesKey) metric.RecordOption {
	m.mu.Lock()
	defer m.mu.Unlock()
	if opt, ok := m.sets[k]; ok {
		return opt
	}
	version := ""
	if k.version != 0 {
		version = strconv.FormatInt(k.version, 10)
	}
	opt := metric.WithAttributeSet(attribute.NewSet(
		attribute.String("rpc.method", k.method),
		attribute.String("model", k.model),
		attribute.String("version", version),
		attribute.String("arm", k.arm),
		attribute.String("rpc.response.status_code", k.code.String()),
	))
	if m.sets == nil {
		m.sets = make(map[seriesKey]metric.RecordOption)
	}
	m.sets[k] = opt
	return opt
}

// AccessLog is a unary server interceptor writing one debug-level line per RPC
// (method, model, version, arm, code, duration; never payloads), with the
// request id and trace ids from the context. It costs nothing while debug is
// off.
func AccessLog(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if log == nil || !log.Enabled(ctx, slog.LevelDebug) {
			return handler(ctx, req)
		}
		start := time.Now()
		resp, err := handler(ctx, req)
		attrs := []slog.Attr{slog.String("method", info.FullMethod), slog.String("code", status.Code(err).String()),
			slog.Duration("duration", time.Since(start))}
		if r, ok := req.(PredictRequest); ok {
			attrs = append(attrs, slog.String("model", r.GetModel()))
		}
		if r, ok := resp.(PredictResponse); ok && err == nil {
			attrs = append(attrs, slog.Int64("version", r.GetVersion()), slog.String("arm", r.GetArm()))
		}
		if err != nil {
			attrs = append(attrs, slog.String("err", status.Convert(err).Message()))
		}
		log.LogAttrs(ctx, slog.LevelDebug, "rpc", attrs...)
		return resp, err
	}
}
