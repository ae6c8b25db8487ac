package gateway

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	otelcodes "go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/tfgate/tfgate/gateway/exposure"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// ensRoutes: reviews and topics (text classifiers, versions 1-3, the same three
// classes), reviews with a 50/50 experiment; then the ensembles: section.
func ensRoutes(ensembles string) string {
	return `  reviews:
    default: stable
    labels: {stable: 1}
    experiment:
      name: e
      arms:
        - {name: control, version: 1, weight: 50}
        - {name: treatment, version: 2, weight: 50}
  topics:
    default: "1"
    timeout: 2s
  churn:
    default: "1"
ensembles:
` + ensembles
}

func startEnsembleStack(t *testing.T, o stackOpts, ensembles string) *stack {
	t.Helper()
	if o.versions == nil {
		o.versions = []int64{1, 2, 3}
	}
	o.textModels = []string{"topics"}
	o.routes = ensRoutes(ensembles)
	s := startStack(t, o)
	for _, v := range o.versions {
		if o.servedVersions == nil || contains64(o.servedVersions, v) {
			s.waitRoutable("reviews", v)
		}
	}
	s.waitRoutable("topics", 1)
	return s
}

func contains64(vs []int64, v int64) bool {
	for _, x := range vs {
		if x == v {
			return true
		}
	}
	return false
}

var ensWords = strings.Fields("the delivery was late but support fixed it great product terrible refund fast shipping broken " +
	"love hate okay box arrived damaged five stars never again recommend cheap quality price")

// randomInstances are 1-4 instances of random words, sometimes with unknown
// tokens and odd characters.
func randomInstances(r *rand.Rand) []*tfgatev1.Instance {
	out := make([]*tfgatev1.Instance, 1+r.IntN(4))
	for i := range out {
		var b strings.Builder
		for range 1 + r.IntN(20) {
			switch r.IntN(10) {
			case 0:
				fmt.Fprintf(&b, "zz%d ", r.IntN(1000))
			case 1:
				b.WriteString("¡ok?! ")
			default:
				b.WriteString(ensWords[r.IntN(len(ensWords))] + " ")
			}
		}
		out[i] = &tfgatev1.Instance{Text: b.String()}
	}
	return out
}

// wantMean is the documented combination: float64, members in order, each score
// times its weight, divided once by the weights' sum, rounded to float32 once.
func wantMean(members [][]*tfgatev1.Prediction, weights []float64, i, j int) float32 {
	var acc, wsum float64
	for k, preds := range members {
		wsum += weights[k]
		acc += weights[k] * float64(preds[i].GetScores()[j].GetScore())
	}
	return float32(acc / wsum)
}

// TestEnsembleCombinesExactly: over random inputs, each ensemble's member
// detail equals a direct call to that member's version, and the combined
// scores equal the documented combination of those direct answers, bit for bit.
func TestEnsembleCombinesExactly(t *testing.T) {
	s := startEnsembleStack(t, stackOpts{}, `  mean3:
    combiner: mean
    members:
      - {model: reviews, name: v1, version: 1}
      - {model: reviews, name: v2, version: 2}
      - {model: reviews, name: v3, version: 3}
  wmean3:
    combiner: weighted_mean
    members:
      - {model: reviews, name: v1, version: 1, weight: 0.3}
      - {model: reviews, name: v2, version: 2, weight: 2.5}
      - {model: topics, version: 3, weight: 1.7}
  vote3:
    combiner: vote
    members:
      - {model: reviews, name: v1, version: 1, weight: 1}
      - {model: reviews, name: v2, version: 2, weight: 3}
      - {model: reviews, name: v3, version: 3, weight: 2}
  each3:
    combiner: each
    members:
      - {model: reviews, name: v1, version: 1}
      - {model: topics, version: 2}
      - {model: reviews, name: v3, version: 3}
`)
	type member struct {
		model   string
		version int64
		weight  float64
	}
	ensembles := map[string][]member{
		"mean3":  {{"reviews", 1, 1}, {"reviews", 2, 1}, {"reviews", 3, 1}},
		"wmean3": {{"reviews", 1, 0.3}, {"reviews", 2, 2.5}, {"topics", 3, 1.7}},
		"vote3":  {{"reviews", 1, 1}, {"reviews", 2, 3}, {"reviews", 3, 2}},
		"each3":  {{"reviews", 1, 1}, {"topics", 2, 1}, {"reviews", 3, 1}},
	}
	r := rand.New(rand.NewPCG(19, 2024))
	ctx := context.Background()
	for n := range 40 {
		name := []string{"mean3", "wmean3", "vote3", "each3"}[n%4]
		inst := randomInstances(r)
		topK := uint32(r.IntN(4))
		resp, err := s.client.Predict(ctx, &tfgatev1.PredictRequest{Model: name, Instances: inst, TopK: topK})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		ms := ensembles[name]
		er := resp.GetEnsemble()
		if resp.GetModel() != name || resp.GetRoute() != tfgatev1.RouteKind_ROUTE_KIND_ENSEMBLE || er.GetPartial() || len(er.GetMembers()) != len(ms) {
			t.Fatalf("%s: response model %q route %v partial %v, %d members", name, resp.GetModel(), resp.GetRoute(), er.GetPartial(), len(er.GetMembers()))
		}
		direct := make([][]*tfgatev1.Prediction, len(ms))
		weights := make([]float64, len(ms))
		for k, m := range ms {
			d, err := s.client.Predict(ctx, &tfgatev1.PredictRequest{Model: m.model, Target: &tfgatev1.PredictRequest_Version{Version: m.version}, Instances: inst, TopK: topK})
			if err != nil {
				t.Fatal(err)
			}
			direct[k], weights[k] = d.GetPredictions(), m.weight
			got := er.GetMembers()[k]
			if got.GetModel() != m.model || got.GetVersion() != m.version || got.GetCode() != 0 || got.GetRoute() != tfgatev1.RouteKind_ROUTE_KIND_VERSION {
				t.Fatalf("%s member %d = %v, want model %s version %d answered", name, k, got, m.model, m.version)
			}
			if len(got.GetPredictions()) != len(inst) {
				t.Fatalf("%s member %q: %d predictions for %d instances", name, got.GetMember(), len(got.GetPredictions()), len(inst))
			}
			for i := range inst {
				if !proto.Equal(got.GetPredictions()[i], direct[k][i]) {
					t.Fatalf("%s member %q instance %d = %v, a direct call = %v", name, got.GetMember(), i, got.GetPredictions()[i], direct[k][i])
				}
			}
		}
		if name == "each3" {
			if len(resp.GetPredictions()) != 0 {
				t.Fatalf("each3 returned %d combined predictions, want none", len(resp.GetPredictions()))
			}
			continue
		}
		if len(resp.GetPredictions()) != len(inst) {
			t.Fatalf("%s: %d combined predictions for %d instances", name, len(resp.GetPredictions()), len(inst))
		}
		for i, p := range resp.GetPredictions() {
			classes := len(direct[0][i].GetScores())
			if len(p.GetScores()) != classes {
				t.Fatalf("%s instance %d: %d classes, want %d", name, i, len(p.GetScores()), classes)
			}
			votes := make([]int, classes)
			vw := make([]float64, classes)
			if name == "vote3" {
				for k := range ms {
					best := 0
					for j, cs := range direct[k][i].GetScores() {
						if cs.GetScore() > direct[k][i].GetScores()[best].GetScore() {
							best = j
						}
					}
					votes[best]++
					vw[best] += weights[k]
				}
			}
			for j, cs := range p.GetScores() {
				var want float32
				if name == "vote3" {
					want = float32(float64(votes[j]) / float64(len(ms)))
				} else {
					w := weights
					if name == "mean3" {
						w = []float64{1, 1, 1}
					}
					want = wantMean(direct, w, i, j)
				}
				if math.Float32bits(cs.GetScore()) != math.Float32bits(want) || cs.GetIndex() != int32(j) || cs.GetLabel() != direct[0][i].GetScores()[j].GetLabel() {
					t.Fatalf("%s instance %d class %d = %v (bits %x), want %v %q (bits %x)", name, i, j, cs, math.Float32bits(cs.GetScore()), want, direct[0][i].GetScores()[j].GetLabel(), math.Float32bits(want))
				}
			}
			if topK > 0 {
				if len(p.GetTopK()) != int(min(topK, uint32(classes))) {
					t.Fatalf("%s instance %d: top_k %d, got %d", name, i, topK, len(p.GetTopK()))
				}
				if name == "vote3" {
					win := p.GetTopK()[0].GetIndex()
					for j := range votes {
						if votes[j] > votes[win] || (votes[j] == votes[win] && vw[j] > vw[win]) {
							t.Fatalf("vote3 instance %d: winner %d (votes %v, weights %v)", i, win, votes, vw)
						}
					}
				} else {
					for _, cs := range p.GetScores() {
						if cs.GetScore() > p.GetTopK()[0].GetScore() {
							t.Fatalf("%s instance %d: top_k[0] %v is not the best of %v", name, i, p.GetTopK()[0], p.GetScores())
						}
					}
				}
			}
		}
	}
}

// TestEnsemblePartialFailure: version 3 of reviews has its spec but no host.
// Under require_all the call fails with the member's code and a message naming
// it; with min_members 2 the others answer, marked partial, combined over the
// members that answered.
func TestEnsemblePartialFailure(t *testing.T) {
	members := `    members:
      - {model: reviews, name: v1, version: 1}
      - {model: reviews, name: broken, version: 3}
      - {model: reviews, name: v2, version: 2}
`
	s := startEnsembleStack(t, stackOpts{servedVersions: []int64{1, 2}}, "  strict:\n    combiner: mean\n"+members+
		"  lenient:\n    combiner: mean\n    min_members: 2\n"+members+"  picky:\n    combiner: mean\n    min_members: 3\n"+members)
	ctx := context.Background()
	inst := text("the box arrived damaged", "five stars")
	for _, name := range []string{"strict", "picky"} {
		_, err := s.client.Predict(ctx, &tfgatev1.PredictRequest{Model: name, Instances: inst})
		if status.Code(err) != codes.NotFound || !contains(err, fmt.Sprintf(`ensemble %q: member "broken" failed: model "reviews" version 3: version not served`, name)) {
			t.Errorf("%s with a member on an unserved version = %v, want NOT_FOUND naming the member and why", name, err)
		}
	}
	resp, err := s.client.Predict(ctx, &tfgatev1.PredictRequest{Model: "lenient", Instances: inst})
	if err != nil {
		t.Fatal(err)
	}
	er := resp.GetEnsemble()
	if !er.GetPartial() {
		t.Errorf("lenient answer not marked partial")
	}
	b := er.GetMembers()[1]
	if b.GetMember() != "broken" || codes.Code(b.GetCode()) != codes.NotFound || !strings.Contains(b.GetError(), "version 3") || len(b.GetPredictions()) != 0 {
		t.Errorf("broken member = %v, want NOT_FOUND naming version 3, no predictions", b)
	}
	ok := [][]*tfgatev1.Prediction{er.GetMembers()[0].GetPredictions(), er.GetMembers()[2].GetPredictions()}
	for i, p := range resp.GetPredictions() {
		for j, cs := range p.GetScores() {
			if want := wantMean(ok, []float64{1, 1}, i, j); cs.GetScore() != want {
				t.Fatalf("partial mean instance %d class %d = %v, want %v (over the two members that answered)", i, j, cs.GetScore(), want)
			}
		}
	}

	lr, err := s.client.ListRoutes(ctx, &tfgatev1.ListRoutesRequest{Model: "lenient"})
	if err != nil {
		t.Fatal(err)
	}
	if len(lr.GetEnsembles()) != 1 || len(lr.GetModels()) != 0 {
		t.Fatalf("ListRoutes(lenient) = %v, want the one ensemble", lr)
	}
	le := lr.GetEnsembles()[0]
	if !le.GetRoutable() || le.GetMinMembers() != 2 || le.GetRequireAll() || le.GetCombiner() != "mean" {
		t.Errorf("ListRoutes lenient = %v, want routable with 2 of 3, mean", le)
	}
	if m := le.GetMembers()[1]; m.GetRoutable() || m.GetRoute() != "version 3" || !strings.Contains(m.GetReason(), "AVAILABLE") {
		t.Errorf("ListRoutes broken member = %v, want not routable, why", m)
	}
	all, err := s.client.ListRoutes(ctx, &tfgatev1.ListRoutesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range all.GetEnsembles() {
		names = append(names, fmt.Sprintf("%s:%v", e.GetName(), e.GetRoutable()))
	}
	if got := strings.Join(names, " "); got != "lenient:true picky:false strict:false" {
		t.Errorf("ListRoutes ensembles = %s, want lenient routable, picky and strict not", got)
	}
}

// stall holds every Predict for one model version until its context ends.
type stall struct {
	Backends
	model   string
	version int64
}

func (b *stall) Predict(ctx context.Context, pools []string, req *servingpb.PredictRequest) (*servingpb.PredictResponse, string, error) {
	if req.GetModelSpec().GetName() == b.model && req.GetModelSpec().GetVersion().GetValue() == b.version {
		<-ctx.Done()
		return nil, "stalled", ctx.Err()
	}
	return b.Backends.Predict(ctx, pools, req)
}

// TestEnsembleDeadlineSplit: each member's backend call gets min(its model's
// timeout, the call's budget - DeadlineMargin), the budget being the ensemble's
// timeout cut to the caller's deadline; a member that overruns it fails with
// DEADLINE_EXCEEDED and the policy decides.
func TestEnsembleDeadlineSplit(t *testing.T) {
	s := startEnsembleStack(t, stackOpts{wrap: func(b Backends) Backends { return &stall{Backends: b, model: "topics", version: 2} }}, `  split:
    combiner: mean
    timeout: 4s
    members:
      - {model: reviews, version: 1}
      - {model: topics, version: 1}
  stalled:
    combiner: mean
    timeout: 2s
    min_members: 1
    members:
      - {model: reviews, version: 1}
      - {model: topics, version: 2}
  stalled-strict:
    combiner: mean
    timeout: 2s
    members:
      - {model: reviews, version: 1}
      - {model: topics, version: 2}
`)
	ctx := context.Background()
	deadlines := func(call func()) map[string]time.Duration {
		t.Helper()
		n := len(s.recorder.all())
		call()
		got := map[string]time.Duration{}
		for _, c := range s.recorder.all()[n:] {
			got[c.model] = c.deadline
		}
		return got
	}
	// reviews' model timeout is 5s, topics' 2s.
	got := deadlines(func() {
		if _, err := s.client.Predict(ctx, &tfgatev1.PredictRequest{Model: "split", Instances: text("fine")}); err != nil {
			t.Fatal(err)
		}
	})
	if d := got["reviews"]; d <= 0 || d > 4*time.Second-DefaultDeadlineMargin {
		t.Errorf("reviews member's deadline %v, want within the ensemble's 4s less the %v margin (its model allows 5s)", d, DefaultDeadlineMargin)
	}
	if d := got["topics"]; d <= 0 || d > 2*time.Second {
		t.Errorf("topics member's deadline %v, want within its model's 2s timeout", d)
	}
	got = deadlines(func() {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		if _, err := s.client.Predict(cctx, &tfgatev1.PredictRequest{Model: "split", Instances: text("fine")}); err != nil {
			t.Fatal(err)
		}
	})
	if d := got["reviews"]; d <= 0 || d > 3*time.Second-DefaultDeadlineMargin {
		t.Errorf("reviews member's deadline under a 3s caller deadline = %v, want within 3s less the margin", d)
	}

	// topics version 2 never answers: its member overruns its share.
	resp, err := s.client.Predict(ctx, &tfgatev1.PredictRequest{Model: "stalled", Instances: text("fine")})
	if err != nil {
		t.Fatal(err)
	}
	if m := resp.GetEnsemble().GetMembers()[1]; !resp.GetEnsemble().GetPartial() || codes.Code(m.GetCode()) != codes.DeadlineExceeded || !strings.Contains(m.GetError(), `model "topics" version 2`) {
		t.Errorf("stalled member = %v (partial %v), want DEADLINE_EXCEEDED naming it, answer partial", m, resp.GetEnsemble().GetPartial())
	}
	if len(resp.GetPredictions()) != 1 {
		t.Errorf("partial answer has %d predictions, want 1", len(resp.GetPredictions()))
	}
	_, err = s.client.Predict(ctx, &tfgatev1.PredictRequest{Model: "stalled-strict", Instances: text("fine")})
	if status.Code(err) != codes.DeadlineExceeded || !contains(err, `member "topics" failed: model "topics" version 2`) {
		t.Errorf("require_all with a stalled member = %v, want DEADLINE_EXCEEDED naming the member", err)
	}
}

// exposures collects exposure records.
type exposures struct {
	mu  sync.Mutex
	rec []exposure.Record
}

func (x *exposures) Expose(r exposure.Record) {
	x.mu.Lock()
	x.rec = append(x.rec, r)
	x.mu.Unlock()
}

func (x *exposures) all() []exposure.Record {
	x.mu.Lock()
	defer x.mu.Unlock()
	return append([]exposure.Record(nil), x.rec...)
}

// TestEnsembleStickyArms: a member on a model's default route gets the arm a
// direct call with the same routing key gets, every time; each member's
// exposure is recorded with the ensemble named.
func TestEnsembleStickyArms(t *testing.T) {
	xs := &exposures{}
	s := startEnsembleStack(t, stackOpts{run: func(rc *RunConfig, _ *Deps) { rc.Server.Exposures = xs }}, `  sticky:
    combiner: mean
    members:
      - {model: reviews}
      - {model: topics}
`)
	ctx := context.Background()
	arms := map[string]int{}
	for i := range 40 {
		key := fmt.Sprintf("customer-%d", i)
		d, err := s.client.Predict(ctx, &tfgatev1.PredictRequest{Model: "reviews", RoutingKey: key, Instances: text("fine")})
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			resp, err := s.client.Predict(ctx, &tfgatev1.PredictRequest{Model: "sticky", RoutingKey: key, Instances: text("fine")})
			if err != nil {
				t.Fatal(err)
			}
			m := resp.GetEnsemble().GetMembers()[0]
			if m.GetArm() != d.GetArm() || m.GetVersion() != d.GetVersion() || m.GetExperiment() != "e" || m.GetRoute() != tfgatev1.RouteKind_ROUTE_KIND_EXPERIMENT {
				t.Fatalf("key %q: ensemble member got arm %q version %d, a direct call arm %q version %d", key, m.GetArm(), m.GetVersion(), d.GetArm(), d.GetVersion())
			}
		}
		arms[d.GetArm()]++
	}
	if arms["control"] == 0 || arms["treatment"] == 0 {
		t.Errorf("40 keys all went to one arm: %v", arms)
	}
	var reviews, topics int
	for _, r := range xs.all() {
		if r.Ensemble != "sticky" {
			continue
		}
		switch r.Model {
		case "reviews":
			reviews++
			if r.Arm == "" || r.Key == "" || r.Code != codes.OK {
				t.Errorf("reviews member exposure %+v, want its arm, the key, OK", r)
			}
		case "topics":
			topics++
		}
	}
	if reviews != 120 || topics != 120 {
		t.Errorf("member exposures: reviews %d, topics %d; want 120 each (one per member call)", reviews, topics)
	}
}

// TestEnsembleBadInput: requests an ensemble cannot serve, and configs that
// are rejected at load (the last good config keeps serving).
func TestEnsembleBadInput(t *testing.T) {
	s := startEnsembleStack(t, stackOpts{}, "  pair: {combiner: mean, members: [{model: reviews}, {model: topics}]}\n")
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		req  *tfgatev1.PredictRequest
		want string
	}{
		{"version", &tfgatev1.PredictRequest{Model: "pair", Target: &tfgatev1.PredictRequest_Version{Version: 1}, Instances: text("x")}, `"pair" is an ensemble: version and label do not apply`},
		{"label", &tfgatev1.PredictRequest{Model: "pair", Target: &tfgatev1.PredictRequest_Label{Label: "stable"}, Instances: text("x")}, `"pair" is an ensemble: version and label do not apply`},
		{"raw", &tfgatev1.PredictRequest{Model: "pair", RawInputs: rawText(t, make([]int64, 16), make([]int64, 16))}, `"pair" is an ensemble: send typed instances`},
		{"no instances", &tfgatev1.PredictRequest{Model: "pair"}, "no instances"},
	} {
		if _, err := s.client.Predict(ctx, tc.req); status.Code(err) != codes.InvalidArgument || !contains(err, tc.want) {
			t.Errorf("%s: %v, want INVALID_ARGUMENT containing %q", tc.name, err, tc.want)
		}
	}
	// A member model whose input does not fit: churn takes numeric features.
	gen := s.srv.Generation()
	for _, bad := range []struct{ ens, want string }{
		{"  pair: {combiner: mean, members: [{model: reviews}, {model: churn}]}\n",
			`ensemble "pair" member "churn": version 1 of model "churn" scores classes [`},
		{"  pair: {combiner: mean, members: [{model: reviews, version: 9}]}\n",
			`ensemble "pair" member "reviews": version 9: version 9 of model "reviews" has no usable preprocessing spec`},
		{"  pair: {combiner: mean, members: [{model: pair}]}\n", `ensemble "pair" member "pair": an ensemble cannot contain itself`},
		{"  reviews: {combiner: each, members: [{model: topics}]}\n", `ensemble "reviews": the name is also a model's`},
	} {
		s.writeRoutes(ensRoutes(bad.ens))
		if err := s.srv.Reload(); err == nil || !strings.Contains(err.Error(), bad.want) || !strings.Contains(err.Error(), s.cfgPath+": ") {
			t.Errorf("reload with %q = %v, want the file and %q", bad.ens, err, bad.want)
		}
		if s.srv.Generation() != gen {
			t.Fatalf("a rejected config changed the generation")
		}
	}
	if _, err := s.client.Predict(ctx, &tfgatev1.PredictRequest{Model: "pair", Instances: text("x")}); err != nil {
		t.Errorf("the last good ensemble stopped serving after rejected reloads: %v", err)
	}
}

// TestEnsembleDeadlineTooShort: a caller deadline within the margin is refused
// before any member runs (in process: a deadline that short cannot cross the wire).
func TestEnsembleDeadlineTooShort(t *testing.T) {
	s := startEnsembleStack(t, stackOpts{}, "  pair: {combiner: mean, members: [{model: reviews}, {model: topics}]}\n")
	n := len(s.recorder.all())
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(DefaultDeadlineMargin/2))
	defer cancel()
	_, err := s.srv.Predict(ctx, &tfgatev1.PredictRequest{Model: "pair", Instances: text("x")})
	if status.Code(err) != codes.DeadlineExceeded || !contains(err, `ensemble "pair": deadline too short`) {
		t.Errorf("Predict with %v left = %v, want DEADLINE_EXCEEDED", DefaultDeadlineMargin/2, err)
	}
	if got := len(s.recorder.all()) - n; got != 0 {
		t.Errorf("%d backend calls for a refused ensemble call", got)
	}
}

// TestEnsembleSpansAndMetrics: one span per member under the ensemble's, the
// member's own request-path spans under it, and the member metrics.
func TestEnsembleSpansAndMetrics(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	s := startEnsembleStack(t, stackOpts{servedVersions: []int64{1, 2}, run: func(_ *RunConfig, d *Deps) { d.TracerProvider, d.MeterProvider = tp, mp }},
		"  pair: {combiner: mean, min_members: 1, members: [{model: reviews, version: 1}, {model: topics, version: 1}, {model: reviews, name: gone, version: 3}]}\n")
	resp, err := s.client.Predict(context.Background(), &tfgatev1.PredictRequest{Model: "pair", Instances: text("fine")})
	if err != nil || !resp.GetEnsemble().GetPartial() {
		t.Fatalf("Predict = %v, %v; want a partial answer", resp, err)
	}
	ended := spans.Ended()
	var ens sdktrace.ReadOnlySpan
	members := map[string]sdktrace.ReadOnlySpan{}
	for _, sp := range ended {
		switch sp.Name() {
		case "tfgate.ensemble":
			ens = sp
		case "tfgate.ensemble.member":
			for _, a := range sp.Attributes() {
				if a.Key == "tfgate.ensemble.member" {
					members[a.Value.AsString()] = sp
				}
			}
		}
	}
	if ens == nil || len(members) != 3 {
		t.Fatalf("spans: ensemble %v, members %v; want one ensemble span and 3 member spans", ens != nil, keys(members))
	}
	for name, sp := range members {
		if sp.Parent().SpanID() != ens.SpanContext().SpanID() {
			t.Errorf("member %q span's parent is not the ensemble span", name)
		}
	}
	if members["gone"].Status().Code != otelcodes.Error {
		t.Errorf("the failed member's span status = %v, want Error", members["gone"].Status())
	}
	backends := 0
	for _, sp := range ended {
		if sp.Name() == "tfgate.backend" && (sp.Parent().SpanID() == members["reviews"].SpanContext().SpanID() || sp.Parent().SpanID() == members["topics"].SpanContext().SpanID()) {
			backends++
		}
	}
	if backends != 2 {
		t.Errorf("%d tfgate.backend spans under the answering members' spans, want 2", backends)
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch m.Name {
			case "tfgate.gateway.ensemble.member_calls", "tfgate.gateway.ensemble.partial":
				for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
					member, _ := dp.Attributes.Value("member")
					code, _ := dp.Attributes.Value("code")
					got[m.Name+" "+member.AsString()+" "+code.AsString()] += dp.Value
				}
			}
		}
	}
	want := map[string]int64{
		"tfgate.gateway.ensemble.member_calls reviews OK":    1,
		"tfgate.gateway.ensemble.member_calls topics OK":     1,
		"tfgate.gateway.ensemble.member_calls gone NotFound": 1,
		"tfgate.gateway.ensemble.partial  ":                  1,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("metric %q = %d, want %d (all: %v)", k, got[k], v, got)
		}
	}
}
