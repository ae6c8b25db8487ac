package telemetry

import (
	"context"
	"encoding/binary"
	"math/rand/v2"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
)

// idOnlyProvider is the tracer provider used when spans go nowhere (no exporter,
// no span processor). The SDK would record every sampled span in full (names,
// attributes, events, timestamps) only to drop it at End; this provider gives
// each span what can be observed from outside the process instead: a fresh span
// id, the parent's trace id (or a fresh one), and the sampled flag and trace
// state the configured sampler decides. So log lines still carry trace and span
// ids, and the traceparent sent to backends is what the SDK would have sent;
// only the recording that nobody reads is skipped (spans report
// IsRecording() == false, so callers skip building attributes too).
type idOnlyProvider struct {
	embedded.TracerProvider
	tracer *idOnlyTracer
}

func newIDOnlyProvider(name string, arg float64) *idOnlyProvider {
	return &idOnlyProvider{tracer: &idOnlyTracer{sample: newDecider(name, arg)}}
}

func (p *idOnlyProvider) Tracer(string, ...trace.TracerOption) trace.Tracer { return p.tracer }

type idOnlyTracer struct {
	embedded.Tracer
	sample decider
}

// Start follows the SDK's tracer.Start: a new root ignores the context's span;
// otherwise the trace id and the sampler's parent are the context's span. It
// reads the context's span once and builds no sampling parameters: the
// configured sampler is one of the SDK's built-in ones, decided by [decider]
// from the parent and the trace id alone, as the SDK's would.
func (t *idOnlyTracer) Start(ctx context.Context, _ string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	var parent trace.SpanContext
	if len(opts) == 0 {
		parent = trace.SpanContextFromContext(ctx)
	} else if cfg := trace.NewSpanStartConfig(opts...); !cfg.NewRoot() {
		parent = trace.SpanContextFromContext(ctx)
	}
	sc := t.child(parent)
	ctx = trace.ContextWithSpanContext(ctx, sc)
	return ctx, trace.SpanFromContext(ctx)
}

// child is the span context of a new span under parent (the zero SpanContext
// for a root): the parent's trace id or a fresh one, a fresh span id, the
// sampler's flag and the parent's trace state.
func (t *idOnlyTracer) child(parent trace.SpanContext) trace.SpanContext {
	tid := parent.TraceID()
	if !parent.IsValid() {
		tid = newTraceID()
	}
	flags := parent.TraceFlags() &^ trace.FlagsSampled
	if t.sample(parent, tid) {
		flags |= trace.FlagsSampled
	}
	// Every built-in sampler keeps the parent's trace state.
	return trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    tid,
		SpanID:     newSpanID(),
		TraceFlags: flags,
		TraceState: parent.TraceState(),
	})
}

// decider is a built-in sampler's decision for a span with this parent (the
// zero SpanContext for a root) and trace id.
type decider func(parent trace.SpanContext, tid trace.TraceID) bool

// newDecider is [newSampler]'s sampler as a decision, with the SDK's rules:
// AlwaysSample and NeverSample; TraceIDRatioBased samples when the trace id's
// low 63 bits (big-endian bytes 8-16, shifted right once) fall below
// fraction*2^63 (always at fraction >= 1, never at <= 0); ParentBased follows a
// valid parent's sampled flag, remote or local, and the root sampler otherwise.
func newDecider(name string, arg float64) decider {
	always := func(trace.SpanContext, trace.TraceID) bool { return true }
	never := func(trace.SpanContext, trace.TraceID) bool { return false }
	ratio := func(f float64) decider {
		if f >= 1 {
			return always
		}
		if f <= 0 {
			return never
		}
		bound := uint64(f * (1 << 63))
		return func(_ trace.SpanContext, tid trace.TraceID) bool {
			return binary.BigEndian.Uint64(tid[8:16])>>1 < bound
		}
	}
	parentBased := func(root decider) decider {
		return func(p trace.SpanContext, tid trace.TraceID) bool {
			if p.IsValid() {
				return p.IsSampled()
			}
			return root(p, tid)
		}
	}
	switch name {
	case "always_on":
		return always
	case "always_off":
		return never
	case "traceidratio":
		return ratio(arg)
	case "parentbased_always_off":
		return parentBased(never)
	case "parentbased_traceidratio":
		return parentBased(ratio(arg))
	default:
		return parentBased(always)
	}
}

func newTraceID() trace.TraceID {
	var id trace.TraceID
	for !id.IsValid() {
		binary.NativeEndian.PutUint64(id[:8], rand.Uint64())
		binary.NativeEndian.PutUint64(id[8:], rand.Uint64())
	}
	return id
}

func newSpanID() trace.SpanID {
	var id trace.SpanID
	for !id.IsValid() {
		binary.NativeEndian.PutUint64(id[:], rand.Uint64())
	}
	return id
}
