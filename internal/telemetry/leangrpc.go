package telemetry

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.39.0"
	"go.opentelemetry.io/otel/semconv/v1.39.0/rpcconv"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// leanHandler is what the otelgrpc stats handlers do that can be observed from
// outside the process, for when spans go nowhere (the [idOnlyProvider]): the
// W3C context extracted from the incoming metadata (server) or injected into
// the outgoing one (client), a span context per RPC continuing it (so log
// lines and the backend's traceparent are what otelgrpc would give), and the
// same instruments on the same meter (rpc.{server,client}.call.duration and,
// when on, the size histograms), with the same attributes and values. What it
// skips is what nobody reads: otelgrpc builds span options, attributes and two
// attribute sets per RPC and walks the context for a span that never records;
// here each method's attribute sets are built once.
//
// Like otelgrpc v0.65.0, the call duration is recorded in milliseconds
// although the instrument's unit is "s" (upstream
// open-telemetry/opentelemetry-go-contrib#8518): the series must not change
// meaning with the exporter setting. Fix both together when otelgrpc does.
type leanHandler struct {
	server   bool
	tracer   *idOnlyTracer
	prop     propagation.TextMapPropagator
	filter   otelgrpc.Filter // nil: every RPC
	duration metric.Float64Histogram
	in, out  metric.Int64Histogram // message sizes received and sent; nil when off

	methods  sync.Map // full method name -> *leanMethod
	nMethods atomic.Int64
}

// maxLeanMethods bounds the methods whose attribute sets are kept: a client
// may name any method (an unknown one still reaches TagRPC and ends
// Unimplemented); past the bound they are built per RPC.
const maxLeanMethods = 256

// leanMethod is one method's precomputed state.
type leanMethod struct {
	record bool          // the filter's answer: spans and metrics, or neither
	base   attribute.Set // rpc.method, rpc.system.name (the size histograms)
	byCode [17]metric.RecordOption
}

// numCodes is the number of gRPC codes with a name (OK..Unauthenticated).
const numCodes = 17

// leanServerKey and leanClientKey hold an RPC's *leanMethod in its context;
// two keys, because a client call made while serving carries the server's.
type (
	leanServerKey struct{}
	leanClientKey struct{}
)

// newLeanHandler builds the handler on p's meter provider (sizes only with
// RPCSizeMetrics), with the instruments otelgrpc would create.
func newLeanHandler(p *Providers, t *idOnlyTracer, server bool, filter otelgrpc.Filter) *leanHandler {
	h := &leanHandler{server: server, tracer: t, prop: p.Propagator, filter: filter}
	meter := p.MeterProvider.Meter(otelgrpc.ScopeName,
		metric.WithInstrumentationVersion(otelgrpc.Version), metric.WithSchemaURL(semconv.SchemaURL))
	if server {
		d, _ := rpcconv.NewServerCallDuration(meter)
		h.duration = d.Inst()
		if p.RPCSizeMetrics {
			in, _ := rpcconv.NewServerRequestSize(meter)
			out, _ := rpcconv.NewServerResponseSize(meter)
			h.in, h.out = in.Inst(), out.Inst()
		}
	} else {
		d, _ := rpcconv.NewClientCallDuration(meter)
		h.duration = d.Inst()
		if p.RPCSizeMetrics {
			in, _ := rpcconv.NewClientResponseSize(meter)
			out, _ := rpcconv.NewClientRequestSize(meter)
			h.in, h.out = in.Inst(), out.Inst()
		}
	}
	return h
}

// method returns the state of info's method, built on its first RPC.
func (h *leanHandler) method(info *stats.RPCTagInfo) *leanMethod {
	if m, ok := h.methods.Load(info.FullMethodName); ok {
		return m.(*leanMethod)
	}
	m := h.newMethod(info)
	if h.nMethods.Add(1) > maxLeanMethods {
		h.nMethods.Add(-1)
		return m
	}
	if prev, loaded := h.methods.LoadOrStore(info.FullMethodName, m); loaded {
		h.nMethods.Add(-1)
		return prev.(*leanMethod)
	}
	return m
}

func (h *leanHandler) newMethod(info *stats.RPCTagInfo) *leanMethod {
	m := &leanMethod{record: h.filter == nil || h.filter(info)}
	attrs := []attribute.KeyValue{semconv.RPCSystemNameGRPC}
	if name := info.FullMethodName; len(name) > 0 && name[0] == '/' {
		attrs = append(attrs, semconv.RPCMethod(name[1:])) // as otelgrpc's ParseFullMethod
	}
	m.base = attribute.NewSet(attrs...)
	for c := range numCodes {
		set := attribute.NewSet(append(attrs[:len(attrs):len(attrs)], semconv.RPCResponseStatusCode(codes.Code(c).String()))...)
		m.byCode[c] = metric.WithAttributeSet(set)
	}
	return m
}

// TagRPC continues the caller's trace (server) or starts the call's span and
// injects it (client), as otelgrpc does, and notes the method for HandleRPC.
func (h *leanHandler) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	m := h.method(info)
	if h.server {
		ctx = h.prop.Extract(ctx, incomingCarrier{ctx})
		if m.record {
			// Extract leaves the remote span context on top: one step to find.
			ctx = trace.ContextWithSpanContext(ctx, h.tracer.child(trace.SpanContextFromContext(ctx)))
		}
		return context.WithValue(ctx, leanServerKey{}, m)
	}
	if m.record {
		ctx = trace.ContextWithSpanContext(ctx, h.tracer.child(trace.SpanContextFromContext(ctx)))
	}
	ctx = context.WithValue(ctx, leanClientKey{}, m)
	var c outgoingCarrier
	h.prop.Inject(ctx, &c)
	if len(c.kv) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, c.kv...)
	}
	return ctx
}

// HandleRPC records the call's duration at its end (and message sizes when
// on), with the attributes otelgrpc gives them.
func (h *leanHandler) HandleRPC(ctx context.Context, rs stats.RPCStats) {
	var m *leanMethod
	if h.server {
		m, _ = ctx.Value(leanServerKey{}).(*leanMethod)
	} else {
		m, _ = ctx.Value(leanClientKey{}).(*leanMethod)
	}
	if m == nil || !m.record {
		return
	}
	switch rs := rs.(type) {
	case *stats.InPayload:
		if h.in != nil {
			h.in.Record(ctx, int64(rs.Length), metric.WithAttributeSet(m.base))
		}
	case *stats.OutPayload:
		if h.out != nil {
			h.out.Record(ctx, int64(rs.Length), metric.WithAttributeSet(m.base))
		}
	case *stats.End:
		code := status.Code(rs.Error)
		var opt metric.RecordOption
		if code < numCodes {
			opt = m.byCode[code]
		} else {
			attrs := append(m.base.ToSlice(), semconv.RPCResponseStatusCode(code.String()))
			opt = metric.WithAttributeSet(attribute.NewSet(attrs...))
		}
		h.duration.Record(ctx, float64(rs.EndTime.Sub(rs.BeginTime))/float64(time.Millisecond), opt)
	}
}

// TagConn and HandleConn do nothing, as otelgrpc's.
func (*leanHandler) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (*leanHandler) HandleConn(context.Context, stats.ConnStats)                       {}

// incomingCarrier reads the incoming metadata in place (otelgrpc copies all of
// it first).
type incomingCarrier struct{ ctx context.Context }

func (c incomingCarrier) Get(key string) string {
	if v := metadata.ValueFromIncomingContext(c.ctx, key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c incomingCarrier) Set(string, string) {}

func (c incomingCarrier) Keys() []string {
	md, _ := metadata.FromIncomingContext(c.ctx)
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	return keys
}

// outgoingCarrier collects what a propagator injects, to be appended to the
// outgoing metadata in one step. otelgrpc sets the keys on a copy of the
// outgoing metadata instead, replacing values already there; nothing sets
// trace headers on the gateway's calls before its stats handler does, so
// appending sends the same.
type outgoingCarrier struct{ kv []string }

func (c *outgoingCarrier) Get(string) string { return "" }
func (c *outgoingCarrier) Set(key, value string) {
	c.kv = append(c.kv, key, value)
}
func (c *outgoingCarrier) Keys() []string {
	keys := make([]string, 0, len(c.kv)/2)
	for i := 0; i < len(c.kv); i += 2 {
		keys = append(keys, c.kv[i])
	}
	return keys
}
