package telemetry

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// echoGateway answers Predict for model "m" (version 7, arm "b") and NOT_FOUND
// for anything else, logging one line with the request context.
type echoGateway struct {
	tfgatev1.UnimplementedGatewayServiceServer
	log *slog.Logger
}

func (g *echoGateway) Predict(ctx context.Context, req *tfgatev1.PredictRequest) (*tfgatev1.PredictResponse, error) {
	g.log.InfoContext(ctx, "predict", "model", req.GetModel())
	if req.GetModel() != "m" {
		return nil, status.Errorf(codes.NotFound, "model %q is not configured", req.GetModel())
	}
	return &tfgatev1.PredictResponse{Model: "m", Version: 7, Arm: "b"}, nil
}

func TestGRPCTraceRequestIDAndMetrics(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	reader := sdkmetric.NewManualReader()
	cfg, err := ConfigFromEnv("test", nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(context.Background(), cfg, Options{
		SpanProcessors: []sdktrace.SpanProcessor{sdktrace.NewSimpleSpanProcessor(spans)},
		MetricReaders:  []sdkmetric.Reader{reader},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())

	var logs syncBuffer
	logger, err := NewLogger(&logs, LogConfig{Format: "json", Level: "debug"})
	if err != nil {
		t.Fatal(err)
	}
	rm, err := NewRequestMetrics(p.MeterProvider, 0)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(append(p.ServerOptions(), grpc.ChainUnaryInterceptor(rm.UnaryServerInterceptor(), AccessLog(logger)))...)
	tfgatev1.RegisterGatewayServiceServer(srv, &echoGateway{log: logger})
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
	client := tfgatev1.NewGatewayServiceClient(conn)

	ctx, caller := p.TracerProvider.Tracer("caller").Start(context.Background(), "caller")
	var hdr metadata.MD
	if _, err := client.Predict(WithRequestID(ctx, "req-123"), &tfgatev1.PredictRequest{Model: "m"}, grpc.Header(&hdr)); err != nil {
		t.Fatalf("Predict: %v", err)
	}
	if got := hdr.Get(RequestIDHeader); len(got) != 1 || got[0] != "req-123" {
		t.Errorf("response x-request-id = %v, want [req-123]", got)
	}
	// A forged id is replaced by a fresh one.
	fctx := metadata.AppendToOutgoingContext(ctx, RequestIDHeader, "bad id {\"x\":1}")
	_, err = client.Predict(fctx, &tfgatev1.PredictRequest{Model: "nope", Target: &tfgatev1.PredictRequest_Version{Version: 3}}, grpc.Header(&hdr))
	if status.Code(err) != codes.NotFound {
		t.Fatalf("Predict(nope) = %v, want NotFound", err)
	}
	if got := hdr.Get(RequestIDHeader); len(got) != 1 || !ValidRequestID(got[0]) || strings.Contains(got[0], "bad") {
		t.Errorf("forged id: response x-request-id = %v, want a fresh valid id", got)
	}
	caller.End()

	// One trace: caller -> client span -> server span.
	var server, clientSpan tracetest.SpanStub
	for _, s := range spans.GetSpans() {
		if s.SpanContext.TraceID() != caller.SpanContext().TraceID() {
			t.Errorf("span %q in trace %s, want the caller's %s", s.Name, s.SpanContext.TraceID(), caller.SpanContext().TraceID())
		}
		switch s.Name {
		case "tfgate.v1.GatewayService/Predict":
			if s.SpanKind.String() == "server" && server.Name == "" {
				server = s
			} else if s.SpanKind.String() == "client" && clientSpan.Name == "" {
				clientSpan = s
			}
		}
	}
	if server.Name == "" || clientSpan.Name == "" {
		t.Fatalf("missing client or server span in %d spans", len(spans.GetSpans()))
	}
	if server.Parent.SpanID() != clientSpan.SpanContext.SpanID() || clientSpan.Parent.SpanID() != caller.SpanContext().SpanID() {
		t.Errorf("parents: server<-%s client<-%s, want server<-client(%s) client<-caller(%s)",
			server.Parent.SpanID(), clientSpan.Parent.SpanID(), clientSpan.SpanContext.SpanID(), caller.SpanContext().SpanID())
	}

	// Every log line of the request carries its request id and trace id.
	// Two lines per request: the handler's and the access log's.
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("got %d log lines, want 4:\n%s", len(lines), logs.String())
	}
	for _, l := range lines[:2] {
		if !strings.Contains(l, `"request_id":"req-123"`) || !strings.Contains(l, `"trace_id":"`+caller.SpanContext().TraceID().String()) {
			t.Errorf("log line lacks request and trace ids: %s", l)
		}
	}
	for _, want := range []string{`"msg":"rpc"`, `"method":"/tfgate.v1.GatewayService/Predict"`, `"code":"OK"`, `"model":"m"`, `"version":7`, `"arm":"b"`} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("access log line lacks %s: %s", want, lines[1])
		}
	}
	if !strings.Contains(lines[3], `"code":"NotFound"`) || !strings.Contains(lines[3], `is not configured`) || strings.Contains(lines[3], "req-123") {
		t.Errorf("access log of the failed request: %s", lines[3])
	}

	// Metrics: one OK series for m/7/b and one NotFound series for nope/3.
	var rmData metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rmData); err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, sm := range rmData.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "tfgate.gateway.request.duration" {
				continue
			}
			for _, dp := range m.Data.(metricdata.Histogram[float64]).DataPoints {
				key := ""
				for _, k := range []attribute.Key{"model", "version", "arm", "rpc.response.status_code"} {
					v, _ := dp.Attributes.Value(k)
					key += v.AsString() + "/"
				}
				got[key] += dp.Count
			}
		}
	}
	want := map[string]uint64{"m/7/b/OK/": 1, "nope/3//NotFound/": 1}
	if len(got) != len(want) {
		t.Errorf("request series = %v, want %v", got, want)
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("series %s count = %d, want %d (all: %v)", k, got[k], n, got)
		}
	}
}

type fakeResp struct {
	model, arm string
	version    int64
}

func (r fakeResp) GetModel() string  { return r.model }
func (r fakeResp) GetVersion() int64 { return r.version }
func (r fakeResp) GetArm() string    { return r.arm }

func TestRequestMetricsModelLimit(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	rm, err := NewRequestMetrics(mp, 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"a", "b", "c", "a", "d"} {
		rm.Record(context.Background(), "/x", nil, fakeResp{model: m, version: 1}, nil, 0)
	}
	var data metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &data); err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, dp := range data.ScopeMetrics[0].Metrics[0].Data.(metricdata.Histogram[float64]).DataPoints {
		v, _ := dp.Attributes.Value("model")
		got[v.AsString()] += dp.Count
	}
	want := map[string]uint64{"a": 2, "b": 1, OtherModel: 2}
	if len(got) != len(want) || got["a"] != 2 || got["b"] != 1 || got[OtherModel] != 2 {
		t.Errorf("model series = %v, want %v", got, want)
	}
}

func TestNewLoggerFormats(t *testing.T) {
	tests := []struct {
		name    string
		cfg     LogConfig
		want    string
		wantErr bool
	}{
		{name: "json default", cfg: LogConfig{}, want: `"msg":"hello"`},
		{name: "text", cfg: LogConfig{Format: "text"}, want: "msg=hello request_id=r1"},
		{name: "debug level passes debug", cfg: LogConfig{Level: "debug"}, want: `"level":"DEBUG"`},
		{name: "bad format", cfg: LogConfig{Format: "xml"}, wantErr: true},
		{name: "bad level", cfg: LogConfig{Level: "loud"}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf syncBuffer
			l, err := NewLogger(&buf, tc.cfg)
			if (err != nil) != tc.wantErr {
				t.Fatalf("NewLogger(%+v) error = %v, wantErr %v", tc.cfg, err, tc.wantErr)
			}
			if tc.wantErr {
				return
			}
			ctx := WithRequestID(context.Background(), "r1")
			l.DebugContext(ctx, "hello")
			l.InfoContext(ctx, "hello")
			if !strings.Contains(buf.String(), tc.want) {
				t.Errorf("output %q lacks %q", buf.String(), tc.want)
			}
		})
	}
}

// Without RPCSizeMetrics the otelgrpc handlers get no-op size histograms and
// the real instruments for everything else.
func TestRPCSizeMetricsSetting(t *testing.T) {
	for _, on := range []bool{true, false} {
		reader := sdkmetric.NewManualReader()
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
		defer mp.Shutdown(context.Background())
		p := &Providers{MeterProvider: mp, RPCSizeMetrics: on}
		m := p.rpcMeterProvider().Meter("otelgrpc")
		size, _ := m.Int64Histogram("rpc.server.request.size")
		dur, _ := m.Float64Histogram("rpc.server.call.duration")
		size.Record(context.Background(), 10)
		dur.Record(context.Background(), 1)
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(context.Background(), &rm); err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				got[m.Name] = true
			}
		}
		if !got["rpc.server.call.duration"] || got["rpc.server.request.size"] != on {
			t.Errorf("RPCSizeMetrics %v: instruments recorded %v, want the duration and the size only when on", on, got)
		}
	}
}
