package gateway

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/tfgate/tfgate/gateway/shadow"
	"github.com/tfgate/tfgate/internal/testwait"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

const shadowRoutes = `  reviews:
    default: stable
    labels: {stable: 1}
    shadow: {version: 2, percent: 100}
  churn:
    default: "1"
`

// shadowOf returns the model's ListRoutes shadow comparison with primary 1.
func (s *stack) shadowOf(t *testing.T) *tfgatev1.ShadowComparison {
	t.Helper()
	lr, err := s.client.ListRoutes(context.Background(), &tfgatev1.ListRoutesRequest{Model: "reviews"})
	if err != nil {
		t.Fatal(err)
	}
	sh := lr.GetModels()[0].GetShadow()
	if sh.GetVersion() != 2 || sh.GetPercent() != 100 {
		t.Fatalf("ListRoutes shadow = %v, want version 2 at 100%%", sh)
	}
	for _, c := range sh.GetComparisons() {
		if c.GetPrimaryVersion() == 1 {
			return c
		}
	}
	return &tfgatev1.ShadowComparison{}
}

func reviewTexts(n int) []string {
	words := []string{"great", "awful", "late", "fine", "support", "refund", "broken", "love", "never", "again", "fast", "cheap"}
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s %s %s %s", words[i%12], words[(i/12)%12], words[(i*7)%12], words[(i*5+3)%12])
	}
	return out
}

// The running agreement ListRoutes shows equals the agreement computed offline
// from both versions' answers to the same inputs.
func TestShadowAgreementMatchesOffline(t *testing.T) {
	s := startStack(t, stackOpts{versions: []int64{1, 2}, routes: shadowRoutes})
	s.waitRoutable("reviews", 2)
	texts := reviewTexts(60)
	for _, tx := range texts {
		if _, err := s.client.Predict(context.Background(), &tfgatev1.PredictRequest{Model: "reviews", Instances: text(tx, tx+" again")}); err != nil {
			t.Fatal(err)
		}
	}
	testwait.Until(t, "every shadow compared", func() bool { return s.shadowOf(t).GetRequests() == uint64(len(texts)) })

	// Offline: both versions pinned explicitly (pinned requests are not shadowed).
	var offline shadow.Diff
	for _, tx := range texts {
		var preds [2][]*tfgatev1.Prediction
		for i, v := range []int64{1, 2} {
			resp, err := s.client.Predict(context.Background(), &tfgatev1.PredictRequest{Model: "reviews", Target: &tfgatev1.PredictRequest_Version{Version: v}, Instances: text(tx, tx+" again")})
			if err != nil {
				t.Fatal(err)
			}
			preds[i] = resp.GetPredictions()
		}
		d := shadow.Compare(preds[0], preds[1])
		offline.Instances += d.Instances
		offline.Top1 += d.Top1
		offline.Agree += d.Agree
		offline.Values += d.Values
		offline.SumAbs += d.SumAbs
		offline.MaxAbs = max(offline.MaxAbs, d.MaxAbs)
	}
	got := s.shadowOf(t)
	wantAgree := float64(offline.Agree) / float64(offline.Top1)
	wantMean := offline.SumAbs / float64(offline.Values)
	if got.GetInstances() != uint64(offline.Instances) || got.GetTop1Agreement() != wantAgree ||
		got.GetMaxAbsDiff() != offline.MaxAbs || math.Abs(got.GetMeanAbsDiff()-wantMean) > 1e-12 || got.GetFailed() != 0 {
		t.Errorf("ListRoutes shadow %v; offline: %d instances, agreement %v, max %v, mean %v", got, offline.Instances, wantAgree, offline.MaxAbs, wantMean)
	}
	if offline.MaxAbs == 0 {
		t.Error("versions 1 and 2 answered identically: the test compares nothing")
	}
	if s.shadowOf(t).GetRequests() != uint64(len(texts)) {
		t.Error("pinned-version requests were shadowed")
	}
}

// shadowBackend holds (stuck) or fails every call for version 2.
type shadowBackend struct {
	Backends
	fail    bool
	entered chan struct{}
	once    sync.Once
	release chan struct{}
}

func (b *shadowBackend) Predict(ctx context.Context, pools []string, req *servingpb.PredictRequest) (*servingpb.PredictResponse, string, error) {
	if req.GetModelSpec().GetVersion().GetValue() == 2 {
		if b.fail {
			return nil, "", status.Error(codes.Internal, "shadow version broken")
		}
		b.once.Do(func() { close(b.entered) })
		select {
		case <-b.release:
		case <-ctx.Done():
			return nil, "", ctx.Err()
		}
	}
	return b.Backends.Predict(ctx, pools, req)
}

// A shadow that hangs or fails changes no caller's answer or error, and a
// caller never waits for it: with every shadow slot stuck, requests complete
// and the surplus shadows are shed.
func TestShadowNeverAffectsCallers(t *testing.T) {
	for _, fail := range []bool{false, true} {
		t.Run(map[bool]string{false: "stuck", true: "failing"}[fail], func(t *testing.T) {
			b := &shadowBackend{fail: fail, entered: make(chan struct{}), release: make(chan struct{})}
			s := startStack(t, stackOpts{versions: []int64{1, 2}, routes: shadowRoutes, wrap: func(in Backends) Backends { b.Backends = in; return b }})
			s.waitRoutable("reviews", 2)
			defer close(b.release)
			texts := reviewTexts(80)
			want := map[string]*tfgatev1.PredictResponse{}
			for _, tx := range texts {
				resp, err := s.client.Predict(context.Background(), &tfgatev1.PredictRequest{Model: "reviews", Target: &tfgatev1.PredictRequest_Version{Version: 1}, Instances: text(tx)})
				if err != nil {
					t.Fatal(err)
				}
				want[tx] = resp
			}
			var wg sync.WaitGroup
			errs := make(chan error, len(texts))
			for g := 0; g < 4; g++ {
				wg.Go(func() {
					for i := g; i < len(texts); i += 4 {
						resp, err := s.client.Predict(context.Background(), &tfgatev1.PredictRequest{Model: "reviews", Instances: text(texts[i])})
						if err != nil {
							errs <- err
							continue
						}
						w := want[texts[i]]
						if resp.GetVersion() != 1 || !proto.Equal(&tfgatev1.PredictResponse{Predictions: resp.GetPredictions()}, &tfgatev1.PredictResponse{Predictions: w.GetPredictions()}) {
							errs <- fmt.Errorf("%q: answer %v, want version 1's %v", texts[i], resp, w)
						}
					}
				})
			}
			wg.Wait() // with the shadow stuck, a caller that waited for it would hang here
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			c := s.shadowOf(t)
			if fail {
				testwait.Until(t, "every shadow failed", func() bool { return s.shadowOf(t).GetFailed() == uint64(len(texts)) })
			} else {
				<-b.entered
				if c.GetShed() < uint64(len(texts)-DefaultShadowConcurrency) || c.GetRequests() != 0 {
					t.Errorf("stuck shadow: %v, want at least %d shed and none compared", c, len(texts)-DefaultShadowConcurrency)
				}
			}
			if st := s.srv.Stats(); st.Requests[codes.OK] != uint64(2*len(texts)) || len(st.Requests) != 1 {
				t.Errorf("request counts %v, want %d OK and nothing else", st.Requests, 2*len(texts))
			}
		})
	}
}

// A shadow of the treatment arm's version shadows the control arm's requests
// only: the treatment's already are that version.
func TestShadowOfAnArm(t *testing.T) {
	routes := strings.Replace(expRoutes("e", "{name: control, version: 1, weight: 50}", "{name: treatment, version: 2, weight: 50}"),
		"labels: {stable: 1}\n", "labels: {stable: 1}\n    shadow: {version: 2, percent: 100}\n", 1)
	s := startStack(t, stackOpts{versions: []int64{1, 2}, routes: routes})
	s.waitRoutable("reviews", 2)
	control := 0
	for i := 0; i < 200; i++ {
		resp, err := s.client.Predict(context.Background(), &tfgatev1.PredictRequest{Model: "reviews", RoutingKey: fmt.Sprint("k", i), Instances: text("fine")})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetArm() == "control" {
			control++
		}
	}
	testwait.Until(t, "the control arm's shadows compared", func() bool { return s.shadowOf(t).GetRequests() == uint64(control) })
	lr, err := s.client.ListRoutes(context.Background(), &tfgatev1.ListRoutesRequest{Model: "reviews"})
	if err != nil {
		t.Fatal(err)
	}
	if cs := lr.GetModels()[0].GetShadow().GetComparisons(); len(cs) != 1 || control == 0 || control == 200 {
		t.Errorf("comparisons %v after %d control requests of 200, want one, with primary 1", cs, control)
	}
}
