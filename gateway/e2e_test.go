package gateway

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

func TestRoutesReachTheirVersion(t *testing.T) {
	s := startStack(t, stackOpts{versions: []int64{1, 2}})
	s.waitRoutable("reviews", 2)
	tests := []struct {
		name      string
		req       *tfgatev1.PredictRequest
		wantV     int64
		wantRoute tfgatev1.RouteKind
	}{
		{"explicit version", &tfgatev1.PredictRequest{Model: "reviews", Target: &tfgatev1.PredictRequest_Version{Version: 2}}, 2, tfgatev1.RouteKind_ROUTE_KIND_VERSION},
		{"label", &tfgatev1.PredictRequest{Model: "reviews", Target: &tfgatev1.PredictRequest_Label{Label: "canary"}}, 2, tfgatev1.RouteKind_ROUTE_KIND_LABEL},
		{"default via label", &tfgatev1.PredictRequest{Model: "reviews"}, 1, tfgatev1.RouteKind_ROUTE_KIND_DEFAULT},
		{"default version", &tfgatev1.PredictRequest{Model: "churn", Instances: []*tfgatev1.Instance{{Numeric: map[string]float64{"f0": 1.5}}}}, 1, tfgatev1.RouteKind_ROUTE_KIND_DEFAULT},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.req.Instances == nil {
				tc.req.Instances = text("the service was great", "terrible!")
				tc.req.TopK = 2
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			resp, err := s.client.Predict(ctx, tc.req)
			if err != nil {
				t.Fatalf("Predict(%v) = %v", tc.req, err)
			}
			if resp.GetVersion() != tc.wantV || resp.GetModel() != tc.req.GetModel() || resp.GetRoute() != tc.wantRoute {
				t.Errorf("Predict(%v) served %s v%d route %v, want %s v%d route %v", tc.req, resp.GetModel(), resp.GetVersion(), resp.GetRoute(), tc.req.GetModel(), tc.wantV, tc.wantRoute)
			}
			if c := s.recorder.last(); c.version != tc.wantV || c.label != "" {
				t.Errorf("backend call pinned version %d label %q, want version %d and no label", c.version, c.label, tc.wantV)
			}
			if len(resp.GetPredictions()) != len(tc.req.GetInstances()) {
				t.Fatalf("got %d predictions for %d instances", len(resp.GetPredictions()), len(tc.req.GetInstances()))
			}
			for i, p := range resp.GetPredictions() {
				if len(p.GetScores()) == 0 {
					t.Errorf("prediction %d has no scores: %v", i, p)
				}
				if tc.req.TopK > 0 && len(p.GetTopK()) != int(tc.req.TopK) {
					t.Errorf("prediction %d has %d top_k, want %d", i, len(p.GetTopK()), tc.req.TopK)
				}
			}
		})
	}

	// The two versions have different vocabularies and weights: the same text
	// through each gives different scores.
	a, err := s.client.Predict(context.Background(), &tfgatev1.PredictRequest{Model: "reviews", Target: &tfgatev1.PredictRequest_Version{Version: 1}, Instances: text("the service was great")})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.client.Predict(context.Background(), &tfgatev1.PredictRequest{Model: "reviews", Target: &tfgatev1.PredictRequest_Version{Version: 2}, Instances: text("the service was great")})
	if err != nil {
		t.Fatal(err)
	}
	if a.GetPredictions()[0].GetScores()[0].GetScore() == b.GetPredictions()[0].GetScores()[0].GetScore() {
		t.Errorf("versions 1 and 2 gave the same score %v; they should differ", a.GetPredictions()[0].GetScores()[0])
	}

	hc := healthpb.NewHealthClient(s.conn)
	h, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: tfgatev1.GatewayService_ServiceDesc.ServiceName})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health check = %v, %v; want SERVING", h, err)
	}
}

func TestRawInputsPassThrough(t *testing.T) {
	s := startStack(t, stackOpts{})
	ids := make([]int64, 16)
	mask := make([]int64, 16)
	ids[0], mask[0] = 5, 1
	req := &tfgatev1.PredictRequest{Model: "reviews", Target: &tfgatev1.PredictRequest_Version{Version: 1}, RawInputs: rawText(t, ids, mask)}
	resp, err := s.client.Predict(context.Background(), req)
	if err != nil {
		t.Fatalf("raw Predict: %v", err)
	}
	if resp.GetVersion() != 1 || resp.GetRawOutputs()["scores"] == nil || len(resp.GetPredictions()) != 0 {
		t.Errorf("raw Predict = version %d outputs %v predictions %d; want version 1 with raw scores and no typed predictions", resp.GetVersion(), keys(resp.GetRawOutputs()), len(resp.GetPredictions()))
	}
	// The tensors pass through unchanged both ways (wire.go): the outputs are
	// what the same inputs sent to servingsim directly give, bit for bit.
	cc, err := grpc.NewClient(s.simAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	direct, err := servingpb.NewPredictionServiceClient(cc).Predict(context.Background(), &servingpb.PredictRequest{
		ModelSpec: &servingpb.ModelSpec{Name: "reviews", VersionChoice: &servingpb.ModelSpec_Version{Version: wrapperspb.Int64(1)}},
		Inputs:    req.GetRawInputs(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := (&servingpb.PredictResponse{Outputs: resp.GetRawOutputs()}), (&servingpb.PredictResponse{Outputs: direct.GetOutputs()}); !proto.Equal(got, want) {
		t.Errorf("raw outputs through the gateway = %v, from servingsim directly %v", got, want)
	}
}

func TestVersionMismatchIsInternal(t *testing.T) {
	s := startStack(t, stackOpts{wrap: func(b Backends) Backends { return &lying{Backends: b} }})
	_, err := s.client.Predict(context.Background(), &tfgatev1.PredictRequest{Model: "reviews", Instances: text("hello")})
	if status.Code(err) != codes.Internal || !contains(err, "the response names version 99") {
		t.Fatalf("Predict with a backend answering for another version = %v, want INTERNAL naming version 99", err)
	}
	if got := s.srv.Stats().VersionMismatches; got != 1 {
		t.Errorf("version mismatches counted = %d, want 1", got)
	}
}

func TestDeadlinePropagation(t *testing.T) {
	s := startStack(t, stackOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := s.client.Predict(ctx, &tfgatev1.PredictRequest{Model: "reviews", Instances: text("hello")}); err != nil {
		t.Fatal(err)
	}
	c := s.recorder.last()
	if c.deadline <= 0 || c.deadline > 2*time.Second-DefaultDeadlineMargin {
		t.Errorf("backend call had %v left, want > 0 and <= 2s minus the %v margin", c.deadline, DefaultDeadlineMargin)
	}
	// Without a caller deadline, the model's timeout (5s in the test config) bounds the call.
	if _, err := s.client.Predict(context.Background(), &tfgatev1.PredictRequest{Model: "reviews", Instances: text("hello")}); err != nil {
		t.Fatal(err)
	}
	if c := s.recorder.last(); c.deadline <= 0 || c.deadline > 5*time.Second {
		t.Errorf("backend call without caller deadline had %v left, want the model's 5s timeout", c.deadline)
	}
}
