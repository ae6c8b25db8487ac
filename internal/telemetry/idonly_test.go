package telemetry

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Without an exporter or span processor, spans are not recorded but keep what
// is visible outside the process: ids, the parent's trace, the sampler's flag.
func TestTracesNoneKeepsIDsWithoutRecording(t *testing.T) {
	remote := func(flags trace.TraceFlags) context.Context {
		sc := trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5}, TraceFlags: flags, Remote: true,
		})
		return trace.ContextWithRemoteSpanContext(context.Background(), sc)
	}
	cases := []struct {
		name        string
		env         map[string]string
		ctx         context.Context
		opts        []trace.SpanStartOption
		wantTrace   trace.TraceID // zero: a fresh one
		wantSampled bool
	}{
		{name: "root, default sampler", env: map[string]string{}, ctx: context.Background(), wantSampled: true},
		{name: "sampled parent", env: map[string]string{}, ctx: remote(trace.FlagsSampled), wantTrace: trace.TraceID{1, 2, 3}, wantSampled: true},
		{name: "unsampled parent", env: map[string]string{}, ctx: remote(0), wantTrace: trace.TraceID{1, 2, 3}},
		{name: "new root ignores parent", env: map[string]string{}, ctx: remote(0), opts: []trace.SpanStartOption{trace.WithNewRoot()}, wantSampled: true},
		{name: "always_off", env: map[string]string{"OTEL_TRACES_SAMPLER": "always_off"}, ctx: context.Background()},
		{name: "explicit none", env: map[string]string{"OTEL_TRACES_EXPORTER": "none"}, ctx: context.Background(), wantSampled: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := ConfigFromEnv("x", envOf(tc.env))
			if err != nil {
				t.Fatal(err)
			}
			p := newTestProviders(t, cfg)
			ctx, span := p.TracerProvider.Tracer("t").Start(tc.ctx, "s", tc.opts...)
			defer span.End()
			sc := span.SpanContext()
			if span.IsRecording() {
				t.Errorf("span is recording with nothing to export it to")
			}
			if !sc.IsValid() {
				t.Fatalf("span context %v is not valid: log lines and traceparent need ids", sc)
			}
			if tc.wantTrace.IsValid() && sc.TraceID() != tc.wantTrace {
				t.Errorf("trace id = %v, want the parent's %v", sc.TraceID(), tc.wantTrace)
			}
			if !tc.wantTrace.IsValid() && sc.TraceID() == (trace.TraceID{1, 2, 3}) {
				t.Errorf("trace id = %v, want a fresh one", sc.TraceID())
			}
			if sc.SpanID() == (trace.SpanID{4, 5}) {
				t.Errorf("span id is the parent's %v, want a fresh one", sc.SpanID())
			}
			if sc.IsSampled() != tc.wantSampled {
				t.Errorf("sampled = %v, want %v", sc.IsSampled(), tc.wantSampled)
			}
			if got := trace.SpanContextFromContext(ctx); !got.Equal(sc) {
				t.Errorf("context carries %v, want the span's %v", got, sc)
			}
			// What a backend receives.
			carrier := propagation.MapCarrier{}
			propagation.TraceContext{}.Inject(ctx, carrier)
			want := "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-" + sc.TraceFlags().String()
			if carrier["traceparent"] != want {
				t.Errorf("traceparent = %q, want %q", carrier["traceparent"], want)
			}
			// A child continues the trace.
			_, child := p.TracerProvider.Tracer("t").Start(ctx, "child")
			if child.SpanContext().TraceID() != sc.TraceID() || child.SpanContext().SpanID() == sc.SpanID() {
				t.Errorf("child %v does not continue %v", child.SpanContext(), sc)
			}
			child.End()
		})
	}
}

// The id-only tracer decides sampling without the SDK's sampler; for every
// configurable sampler it must decide as the SDK would.
func TestDeciderMatchesSDKSampler(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, name := range validSamplers {
		for _, arg := range []float64{0, 0.001, 0.25, 0.5, 0.999, 1} {
			sdk, fast := newSampler(name, arg), newDecider(name, arg)
			for i := range 2000 {
				var tid trace.TraceID
				binary.BigEndian.PutUint64(tid[:8], rng.Uint64())
				binary.BigEndian.PutUint64(tid[8:], rng.Uint64())
				ctx, parent := context.Background(), trace.SpanContext{}
				if i%3 != 0 { // a parent, remote or local, sampled or not
					parent = trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: trace.SpanID{1},
						TraceFlags: trace.TraceFlags(i % 2), Remote: i%3 == 1})
					ctx = trace.ContextWithSpanContext(ctx, parent)
				}
				want := sdk.ShouldSample(sdktrace.SamplingParameters{ParentContext: ctx, TraceID: tid, Name: "s"}).Decision == sdktrace.RecordAndSample
				if got := fast(parent, tid); got != want {
					t.Fatalf("%s(%v): parent %v trace %v: sampled = %v, the SDK's sampler says %v", name, arg, parent, tid, got, want)
				}
			}
		}
	}
}

func BenchmarkIDOnlyStart(b *testing.B) {
	tr := newIDOnlyProvider("parentbased_always_on", 1).Tracer("b")
	ctx := context.Background()
	for range 12 { // a server call's context is this deep
		ctx = context.WithValue(ctx, new(int), 1)
	}
	b.ReportAllocs()
	for b.Loop() {
		_, span := tr.Start(ctx, "s")
		span.End()
	}
}
