package gateway

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	tfpb "github.com/tfgate/tfgate/proto/tensorflow"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// Gateway-side batching end to end: typed requests through the gateway's gRPC API,
// preprocessing, the model's batcher, hosts and servingsim over loopback TCP.

const batchedRoutes = `  reviews:
    default: stable
    labels: {stable: 1, canary: 2}
    batching: {enabled: true, max_batch_size: 16, batch_timeout: 20ms, allowed_batch_sizes: [4, 8, 16], max_enqueued_batches: 100}
  churn:
    default: "1"
`

// TestBatchingThroughGateway sends the same concurrent requests with batching off
// and then on (after a config reload), and checks that every caller gets the same
// predictions, bit for bit, while the backend saw batches holding several callers'
// rows, and that a poisoned raw request fails alone.
func TestBatchingThroughGateway(t *testing.T) {
	s := startStack(t, stackOpts{})
	const callers = 40
	reqs := make([]*tfgatev1.PredictRequest, callers)
	for i := range reqs {
		var inst []string
		for j := range 1 + i%3 {
			inst = append(inst, fmt.Sprintf("caller %d says the service was %s", i, strings.Repeat("great ", j+i%5)))
		}
		reqs[i] = &tfgatev1.PredictRequest{Model: "reviews", Target: &tfgatev1.PredictRequest_Version{Version: 1}, Instances: text(inst...), TopK: 2}
		if i%4 == 3 { // raw tensors: batched and split as wire bytes (batching/wire.go)
			ids, mask := make([]int64, 16), make([]int64, 16)
			for j := range 1 + i%16 {
				ids[j], mask[j] = int64(1+(i*31+j*7)%90), 1
			}
			reqs[i] = &tfgatev1.PredictRequest{Model: "reviews", Target: &tfgatev1.PredictRequest_Version{Version: 1}, RawInputs: rawText(t, ids, mask)}
		}
	}
	send := func(extra ...*tfgatev1.PredictRequest) ([]*tfgatev1.PredictResponse, []error) {
		all := append(append([]*tfgatev1.PredictRequest{}, reqs...), extra...)
		resps, errs := make([]*tfgatev1.PredictResponse, len(all)), make([]error, len(all))
		var wg sync.WaitGroup
		for i, r := range all {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				resps[i], errs[i] = s.client.Predict(ctx, r)
			}()
		}
		wg.Wait()
		return resps, errs
	}

	unbatched, errs := send()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("unbatched caller %d: %v", i, err)
		}
	}
	for _, c := range s.recorder.all() {
		if c.rows > 3 {
			t.Fatalf("with batching off the backend saw a call of %d rows; callers send at most 3", c.rows)
		}
	}

	gen := s.srv.Generation()
	s.writeRoutes(batchedRoutes)
	s.waitGeneration(gen + 1)
	before := len(s.recorder.all())

	// One raw request whose token id is outside the vocabulary: servingsim rejects
	// it, which must not fail the callers batched with it.
	ids, mask := make([]int64, 16), make([]int64, 16)
	ids[0], mask[0] = 1<<40, 1
	poisoned := &tfgatev1.PredictRequest{Model: "reviews", Target: &tfgatev1.PredictRequest_Version{Version: 1}, RawInputs: rawText(t, ids, mask)}
	batched, errs := send(poisoned)
	for i := range reqs {
		if errs[i] != nil {
			t.Errorf("batched caller %d: %v", i, errs[i])
			continue
		}
		if reqs[i].GetRawInputs() != nil {
			if !maps.EqualFunc(batched[i].GetRawOutputs(), unbatched[i].GetRawOutputs(), func(a, b *tfpb.TensorProto) bool { return proto.Equal(a, b) }) ||
				len(batched[i].GetRawOutputs()) == 0 {
				t.Errorf("raw caller %d: batched raw_outputs differ from unbatched:\ngot  %v\nwant %v", i, batched[i].GetRawOutputs(), unbatched[i].GetRawOutputs())
			}
			continue
		}
		if !proto.Equal(batched[i].GetPredictions()[0], unbatched[i].GetPredictions()[0]) ||
			len(batched[i].GetPredictions()) != len(unbatched[i].GetPredictions()) {
			t.Errorf("caller %d: batched predictions differ from unbatched:\ngot  %v\nwant %v", i, batched[i].GetPredictions(), unbatched[i].GetPredictions())
		}
		for j := range batched[i].GetPredictions() {
			if !proto.Equal(batched[i].GetPredictions()[j], unbatched[i].GetPredictions()[j]) {
				t.Errorf("caller %d instance %d: got %v, want %v", i, j, batched[i].GetPredictions()[j], unbatched[i].GetPredictions()[j])
			}
		}
		if batched[i].GetVersion() != 1 {
			t.Errorf("caller %d served by version %d, want 1", i, batched[i].GetVersion())
		}
	}
	if err := errs[callers]; status.Code(err) != codes.InvalidArgument {
		t.Errorf("poisoned raw request = %v, want INVALID_ARGUMENT from the backend", err)
	}

	calls := s.recorder.all()[before:]
	var multi int
	for _, c := range calls {
		if c.version != 1 || c.label != "" {
			t.Errorf("batched backend call pinned version %d label %q, want version 1", c.version, c.label)
		}
		if c.rows != 4 && c.rows != 8 && c.rows != 16 && c.rows > 3 {
			t.Errorf("backend call of %d rows; want an allowed size (4, 8, 16) or a lone re-send of one caller (1 to 3 rows, after the poisoned batch failed)", c.rows)
		}
		if c.rows > 3 {
			multi++
		}
	}
	if len(calls) >= callers || multi == 0 {
		t.Errorf("%d callers made %d backend calls (%d of more than 3 rows): nothing was batched", callers+1, len(calls), multi)
	}
	rows := make([]int64, len(calls))
	for i, c := range calls {
		rows[i] = c.rows
	}
	t.Logf("%d callers + 1 poisoned: %d backend calls of %v rows", callers, len(calls), rows)
}

// gated holds every Predict until release is closed, announcing each on entered.
type gated struct {
	Backends
	entered chan struct{}
	release chan struct{}
}

func (g *gated) Predict(ctx context.Context, pools []string, req *servingpb.PredictRequest) (*servingpb.PredictResponse, string, error) {
	g.entered <- struct{}{}
	select {
	case <-g.release:
	case <-ctx.Done():
		return nil, "", ctx.Err()
	}
	return g.Backends.Predict(ctx, pools, req)
}

// TestBatchingShedsThroughGateway fills a model's batch queue and checks that the
// next caller gets RESOURCE_EXHAUSTED through the gateway, naming the model, the
// version and the queue size, while the admitted callers are served.
func TestBatchingShedsThroughGateway(t *testing.T) {
	g := &gated{entered: make(chan struct{}, 4), release: make(chan struct{})}
	routes := `  reviews:
    default: stable
    labels: {stable: 1, canary: 2}
    batching: {enabled: true, max_batch_size: 1, batch_timeout: 0s, max_enqueued_batches: 1, max_in_flight_batches: 1}
  churn:
    default: "1"
`
	s := startStack(t, stackOpts{routes: routes, wrap: func(b Backends) Backends { g.Backends = b; return g }})
	req := &tfgatev1.PredictRequest{Model: "reviews", Target: &tfgatev1.PredictRequest_Version{Version: 1}, Instances: text("hello there")}
	errs := make(chan error, 2)
	predict := func() {
		_, err := s.client.Predict(context.Background(), req)
		errs <- err
	}
	go predict()
	<-g.entered // the first request is at the backend, holding the one slot
	go predict()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(time.Millisecond) {
		if st := s.srv.group.Stats(); len(st) == 1 && st[0].Queued == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("second request never queued: %+v", s.srv.group.Stats())
		}
	}
	_, err := s.client.Predict(context.Background(), req)
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("Predict on a full batch queue = %v, want RESOURCE_EXHAUSTED", err)
	}
	for _, want := range []string{`model "reviews" version 1`, "max_enqueued_batches 1"} {
		if !strings.Contains(status.Convert(err).Message(), want) {
			t.Errorf("shed message %q does not contain %q", status.Convert(err).Message(), want)
		}
	}
	close(g.release)
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("admitted request failed: %v", err)
		}
	}
}
