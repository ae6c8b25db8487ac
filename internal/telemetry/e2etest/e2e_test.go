package e2etest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/tfgate/tfgate/gateway"
	"github.com/tfgate/tfgate/internal/modelgen"
	"github.com/tfgate/tfgate/internal/servingsim"
	simmodel "github.com/tfgate/tfgate/internal/servingsim/model"
	"github.com/tfgate/tfgate/internal/telemetry"
	"github.com/tfgate/tfgate/internal/testenv"
	"github.com/tfgate/tfgate/internal/tlsconfig"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type env struct {
	prov    *telemetry.Providers
	spans   *tracetest.InMemoryExporter
	client  tfgatev1.GatewayServiceClient
	metrics string // admin /metrics URL
	addr    string // the gateway's gRPC address
}

const routes = `backends:
  pools:
    main: {static: [%q]}
  readiness: {interval: 100ms}
defaults:
  pools: [main]
  timeout: 5s
models:
  reviews:
    default: stable
    labels: {stable: 1, canary: 2}
    experiment:
      name: exp
      arms:
        - {name: control, version: 1, weight: 50}
        - {name: treatment, version: 2, weight: 50}
    batching: {enabled: true, max_batch_size: 8, batch_timeout: 1ms}
`

// opts add transport security to the stack start builds; the zero value is
// plaintext everywhere.
type opts struct {
	listener    *tlsconfig.Config // the gateway's listener (RunConfig.ListenerTLS)
	sim         *tlsconfig.Source // servingsim's listener (TF Serving with TLS)
	backends    *tlsconfig.Config // the gateway's client towards servingsim (RunConfig.BackendTLS)
	clientCreds credentials.TransportCredentials
	reload      <-chan os.Signal // Deps.Reload (SIGHUP)
}

// start runs servingsim and the gateway (gateway.Run, wired as cmd/gateway
// runs it: the same telemetry, admin server and TLS handling) with one set of
// telemetry providers recording spans in memory.
func start(t *testing.T, o opts) *env {
	t.Helper()
	root := t.TempDir()
	for _, v := range []int64{1, 2} {
		spec := modelgen.Spec{Kind: simmodel.KindTextClassifier, Seed: v * 7919, MaxLen: 16, Classes: 3, VocabSize: 600}
		if err := modelgen.Export(filepath.Join(root, "reviews", fmt.Sprint(v)), spec); err != nil {
			t.Fatal(err)
		}
	}
	mcf := filepath.Join(root, "models.config")
	if err := os.WriteFile(mcf, []byte(fmt.Sprintf(`model_config_list { config { name: "reviews" base_path: %q model_platform: "tensorflow" model_version_policy { all {} } } }`, filepath.Join(root, "reviews"))), 0o644); err != nil {
		t.Fatal(err)
	}

	spans := tracetest.NewInMemoryExporter()
	cfg, err := telemetry.ConfigFromEnv("tfgate-gateway-test", nil)
	if err != nil {
		t.Fatal(err)
	}
	prov, err := telemetry.New(context.Background(), cfg, telemetry.Options{
		SpanProcessors: []sdktrace.SpanProcessor{sdktrace.NewSimpleSpanProcessor(spans)},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = prov.Shutdown(context.Background()) })

	// servingsim stands in for TF Serving; its otelgrpc server handler shows
	// what trace context TF Serving receives in the gRPC metadata.
	sc := servingsim.DefaultConfig()
	sc.ModelConfigFile, sc.FileSystemPollWait = mcf, 100*time.Millisecond
	sc.ServerOptions = []grpc.ServerOption{grpc.StatsHandler(prov.ServerHandler())}
	if o.sim != nil {
		sc.ServerOptions = append(sc.ServerOptions, grpc.Creds(o.sim.Credentials()))
	}
	if o.clientCreds == nil {
		o.clientCreds = insecure.NewCredentials()
	}
	simAddr, _ := testenv.StartServingsimInProcess(t, sc)

	cfgPath := filepath.Join(t.TempDir(), "routes.yaml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(routes, simAddr)), 0o644); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adminLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- gateway.Run(ctx, gateway.RunConfig{
			ConfigPath: cfgPath, ModelRoot: root, SpecPollInterval: 100 * time.Millisecond, ShutdownTimeout: 5 * time.Second,
			ListenerTLS: o.listener, BackendTLS: o.backends,
		}, gateway.Deps{
			Reload:        o.reload,
			Telemetry:     prov,
			Listener:      lis,
			AdminListener: adminLis,
			Started:       func(net.Addr, *gateway.Server) { close(started) },
		})
	}()
	select {
	case <-started:
	case err := <-done:
		cancel()
		t.Fatalf("gateway.Run: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("gateway did not start in 30s")
	}

	conn, err := grpc.NewClient(lis.Addr().String(), append(prov.DialOptions(nil), grpc.WithTransportCredentials(o.clientCreds))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway.Run after shutdown: %v", err)
		}
	})
	e := &env{prov: prov, spans: spans, client: tfgatev1.NewGatewayServiceClient(conn), metrics: "http://" + adminLis.Addr().String() + "/metrics", addr: lis.Addr().String()}
	e.waitRoutable(t, "reviews", 1, 2)
	return e
}

func (e *env) waitRoutable(t *testing.T, model string, versions ...int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := e.client.ListRoutes(context.Background(), &tfgatev1.ListRoutesRequest{Model: model})
		n := 0
		if err == nil && len(resp.GetModels()) == 1 {
			for _, vs := range resp.GetModels()[0].GetVersions() {
				for _, v := range versions {
					if vs.GetVersion() == v && vs.GetRoutable() {
						n++
					}
				}
			}
		}
		if n == len(versions) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s versions %v not routable after 20s: %v %v", model, versions, resp, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func text(s string) []*tfgatev1.Instance { return []*tfgatev1.Instance{{Text: s}} }

func attrOf(s tracetest.SpanStub, key string) (attribute.Value, bool) {
	for _, a := range s.Attributes {
		if string(a.Key) == key {
			return a.Value, true
		}
	}
	return attribute.Value{}, false
}

func TestOneTraceFromCallerToServingsim(t *testing.T) {
	e := start(t, opts{})
	e.spans.Reset()

	ctx, caller := e.prov.TracerProvider.Tracer("caller").Start(context.Background(), "caller")
	resp, err := e.client.Predict(ctx, &tfgatev1.PredictRequest{Model: "reviews", Target: &tfgatev1.PredictRequest_Label{Label: "canary"}, Instances: text("a fine product")})
	caller.End()
	if err != nil {
		t.Fatalf("Predict: %v", err)
	}
	if resp.GetVersion() != 2 {
		t.Fatalf("served version %d, want 2 (label canary)", resp.GetVersion())
	}

	// The batch_wait span ends at dispatch; the servingsim server span may end
	// just after the client's response: wait until every expected span is in.
	want := []string{"caller", "tfgate.route", "tfgate.preprocess", "tfgate.batch_wait", "tfgate.backend"}
	traceID := caller.SpanContext().TraceID()
	var byName map[string][]tracetest.SpanStub
	deadline := time.Now().Add(5 * time.Second)
	for {
		byName = map[string][]tracetest.SpanStub{}
		for _, s := range e.spans.GetSpans() {
			if s.SpanContext.TraceID() == traceID {
				byName[s.Name] = append(byName[s.Name], s)
			}
		}
		complete := len(byName["tensorflow.serving.PredictionService/Predict"]) == 2 && len(byName["tfgate.v1.GatewayService/Predict"]) == 2
		for _, n := range want {
			complete = complete && len(byName[n]) == 1
		}
		if complete || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	one := func(name string, kind trace.SpanKind) tracetest.SpanStub {
		t.Helper()
		for _, s := range byName[name] {
			if s.SpanKind == kind {
				return s
			}
		}
		var names []string
		for n, ss := range byName {
			names = append(names, fmt.Sprintf("%s x%d", n, len(ss)))
		}
		t.Fatalf("no %s span %q in the caller's trace; it has %v", kind, name, names)
		return tracetest.SpanStub{}
	}
	gwClient := one("tfgate.v1.GatewayService/Predict", trace.SpanKindClient)
	gwServer := one("tfgate.v1.GatewayService/Predict", trace.SpanKindServer)
	routeSpan := one("tfgate.route", trace.SpanKindInternal)
	pre := one("tfgate.preprocess", trace.SpanKindInternal)
	wait := one("tfgate.batch_wait", trace.SpanKindInternal)
	backend := one("tfgate.backend", trace.SpanKindInternal)
	tfClient := one("tensorflow.serving.PredictionService/Predict", trace.SpanKindClient)
	tfServer := one("tensorflow.serving.PredictionService/Predict", trace.SpanKindServer)

	parents := []struct {
		child, parent tracetest.SpanStub
	}{
		{gwClient, tracetest.SpanStub{Name: "caller", SpanContext: caller.SpanContext()}},
		{gwServer, gwClient}, {routeSpan, gwServer}, {pre, gwServer}, {wait, gwServer}, {backend, gwServer},
		{tfClient, backend},
		// servingsim continued the trace it received in the gRPC metadata.
		{tfServer, tfClient},
	}
	for _, p := range parents {
		if p.child.Parent.SpanID() != p.parent.SpanContext.SpanID() {
			t.Errorf("span %s (%s) has parent %s, want %s (%s)", p.child.Name, p.child.SpanKind, p.child.Parent.SpanID(), p.parent.Name, p.parent.SpanContext.SpanID())
		}
	}
	if !tfServer.Parent.IsRemote() {
		t.Errorf("servingsim's server span parent is not remote: the context did not cross the wire")
	}
	checks := []struct {
		span tracetest.SpanStub
		key  string
		want any
	}{
		{routeSpan, "tfgate.model", "reviews"}, {routeSpan, "tfgate.version", int64(2)}, {routeSpan, "tfgate.route", "ROUTE_KIND_LABEL"},
		{pre, "tfgate.version", int64(2)}, {pre, "tfgate.instances", int64(1)},
		{wait, "tfgate.batch.rows", int64(1)},
		{backend, "tfgate.model", "reviews"}, {backend, "tfgate.version", int64(2)}, {backend, "tfgate.host", fmt.Sprint(tfClient.Attributes)}, {backend, "tfgate.batch.rows", int64(1)},
	}
	for _, c := range checks {
		v, ok := attrOf(c.span, c.key)
		if !ok {
			t.Errorf("span %s lacks attribute %s", c.span.Name, c.key)
			continue
		}
		if c.key == "tfgate.host" {
			if v.AsString() == "" || !strings.Contains(c.want.(string), strings.Split(v.AsString(), ":")[1]) {
				t.Errorf("span %s: tfgate.host %q is not the address the client span called (%v)", c.span.Name, v.AsString(), c.want)
			}
			continue
		}
		if got := v.AsInterface(); got != c.want {
			t.Errorf("span %s: %s = %v, want %v", c.span.Name, c.key, got, c.want)
		}
	}
}

// scrape fetches and parses the admin server's /metrics.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

func labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

func TestMetricsAfterTraffic(t *testing.T) {
	e := start(t, opts{})
	// Traffic with known outcomes: explicit version 1, label canary (2), the
	// experiment by routing key (arms counted from the responses), and
	// requests that fail.
	want := map[string]uint64{} // "version/arm/code" -> count
	do := func(req *tfgatev1.PredictRequest) {
		resp, err := e.client.Predict(context.Background(), req)
		if err != nil {
			want[fmt.Sprintf("%d//%s", req.GetVersion(), status.Code(err))]++
			return
		}
		want[fmt.Sprintf("%d/%s/OK", resp.GetVersion(), resp.GetArm())]++
	}
	for i := 0; i < 5; i++ {
		do(&tfgatev1.PredictRequest{Model: "reviews", Target: &tfgatev1.PredictRequest_Version{Version: 1}, Instances: text("great")})
	}
	for i := 0; i < 3; i++ {
		do(&tfgatev1.PredictRequest{Model: "reviews", Target: &tfgatev1.PredictRequest_Label{Label: "canary"}, Instances: text("meh")})
	}
	for i := 0; i < 20; i++ {
		do(&tfgatev1.PredictRequest{Model: "reviews", RoutingKey: fmt.Sprintf("customer-%d", i), Instances: text("ok")})
	}
	for i := 0; i < 2; i++ {
		do(&tfgatev1.PredictRequest{Model: "reviews", Target: &tfgatev1.PredictRequest_Version{Version: 9}, Instances: text("x")})
	}
	if want["1/control/OK"]+want["2/treatment/OK"] != 20 || want["1/control/OK"] == 0 || want["2/treatment/OK"] == 0 {
		t.Fatalf("experiment traffic did not reach both arms: %v", want)
	}
	if want["9//OK"] != 0 || want["9//NotFound"]+want["9//FailedPrecondition"]+want["9//Unavailable"]+want["9//InvalidArgument"] != 2 {
		t.Logf("requests for version 9: %v", want)
	}

	fams := scrape(t, e.metrics)
	fam := fams["tfgate_gateway_request_duration_seconds"]
	if fam == nil || fam.GetType() != dto.MetricType_HISTOGRAM {
		t.Fatalf("tfgate_gateway_request_duration_seconds missing or not a histogram: %v", fam)
	}
	got := map[string]uint64{}
	for _, m := range fam.GetMetric() {
		l := labels(m)
		if l["rpc_method"] != "/tfgate.v1.GatewayService/Predict" || l["model"] != "reviews" {
			continue
		}
		got[l["version"]+"/"+l["arm"]+"/"+l["rpc_response_status_code"]] += m.GetHistogram().GetSampleCount()
	}
	if len(got) != len(want) {
		t.Errorf("series %v, want %v", got, want)
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("series version/arm/code %s: count %d, want %d", k, got[k], n)
		}
	}

	// The owners' instruments come through the same registry.
	for _, name := range []string{
		"rpc_server_call_duration_seconds", "rpc_client_call_duration_seconds",
		"tfgate_batching_batch_size", "tfgate_batching_queue_wait_seconds",
		"tfgate_gateway_config_reloads_total", "go_goroutines", "target_info",
	} {
		if fams[name] == nil {
			t.Errorf("/metrics lacks %s", name)
		}
	}

	// Every exported family is documented.
	doc, err := os.ReadFile(filepath.Join("..", "..", "..", "docs", "metrics.md"))
	if err != nil {
		t.Fatalf("docs/metrics.md: %v", err)
	}
	for name := range fams {
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") || strings.HasPrefix(name, "promhttp_") {
			continue
		}
		if !strings.Contains(string(doc), "`"+name+"`") {
			t.Errorf("docs/metrics.md does not document %s (%s)", name, fams[name].GetHelp())
		}
	}
	if t.Failed() {
		var all []string
		for name, f := range fams {
			if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
				continue
			}
			ls := map[string]bool{}
			for _, m := range f.GetMetric() {
				for l := range labels(m) {
					ls[l] = true
				}
			}
			var keys []string
			for l := range ls {
				keys = append(keys, l)
			}
			sort.Strings(keys)
			all = append(all, fmt.Sprintf("%s %s %q %v", name, f.GetType(), f.GetHelp(), keys))
		}
		sort.Strings(all)
		t.Logf("scraped families:\n%s", strings.Join(all, "\n"))
	}
}
