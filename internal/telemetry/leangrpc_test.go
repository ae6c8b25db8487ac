package telemetry

import (
	"context"
	"net"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// traceparentGateway answers Predict with the traceparent it received and the
// span context its handler sees, in the response's model and arm fields.
type traceparentGateway struct {
	tfgatev1.UnimplementedGatewayServiceServer
}

func (traceparentGateway) Predict(ctx context.Context, req *tfgatev1.PredictRequest) (*tfgatev1.PredictResponse, error) {
	tp := metadata.ValueFromIncomingContext(ctx, "traceparent")
	sc := trace.SpanContextFromContext(ctx)
	resp := &tfgatev1.PredictResponse{Arm: sc.TraceID().String() + "/" + sc.SpanID().String()}
	if len(tp) == 1 {
		resp.Model = tp[0]
	}
	return resp, nil
}

// With no exporter, the lean handlers stand in for otelgrpc: the client sends
// the call span's traceparent, the server continues that trace in a span of
// its own, and both record their call duration with otelgrpc's attributes.
func TestLeanHandlersPropagateAndMeasure(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	cfg, err := ConfigFromEnv("test", nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(context.Background(), cfg, Options{MetricReaders: []sdkmetric.Reader{reader}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	if _, ok := p.ServerHandler().(*leanHandler); !ok {
		t.Fatalf("ServerHandler = %T without an exporter, want the lean handler", p.ServerHandler())
	}
	srv := grpc.NewServer(p.ServerOptions()...)
	tfgatev1.RegisterGatewayServiceServer(srv, traceparentGateway{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Stop()
	conn, err := grpc.NewClient(ln.Addr().String(), append(p.DialOptions(nil), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	ctx, caller := p.TracerProvider.Tracer("caller").Start(context.Background(), "caller")
	defer caller.End()
	resp, err := tfgatev1.NewGatewayServiceClient(conn).Predict(ctx, &tfgatev1.PredictRequest{Model: "m"})
	if err != nil {
		t.Fatal(err)
	}
	sent := propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier{"traceparent": resp.GetModel()})
	sentSC := trace.SpanContextFromContext(sent)
	if sentSC.TraceID() != caller.SpanContext().TraceID() || sentSC.SpanID() == caller.SpanContext().SpanID() || !sentSC.IsSampled() {
		t.Errorf("traceparent %q, want the caller's trace %s with the client span's own id, sampled", resp.GetModel(), caller.SpanContext().TraceID())
	}
	if want := sentSC.TraceID().String() + "/"; len(resp.GetArm()) <= len(want) || resp.GetArm()[:len(want)] != want || resp.GetArm() == want+sentSC.SpanID().String() {
		t.Errorf("server span %s, want a new span in trace %s", resp.GetArm(), sentSC.TraceID())
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != "go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc" {
			continue
		}
		for _, m := range sm.Metrics {
			h, ok := m.Data.(metricdata.Histogram[float64])
			if !ok {
				continue
			}
			for _, dp := range h.DataPoints {
				method, _ := dp.Attributes.Value("rpc.method")
				code, _ := dp.Attributes.Value("rpc.response.status_code")
				sys, _ := dp.Attributes.Value("rpc.system.name")
				got[m.Name+" "+method.AsString()+" "+code.AsString()+" "+sys.AsString()] += dp.Count
			}
		}
	}
	for _, k := range []string{
		"rpc.server.call.duration tfgate.v1.GatewayService/Predict " + codes.OK.String() + " grpc",
		"rpc.client.call.duration tfgate.v1.GatewayService/Predict " + codes.OK.String() + " grpc",
	} {
		if got[k] != 1 {
			t.Errorf("series %q count %d, want 1 (all: %v)", k, got[k], got)
		}
	}
}
