package batching

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/tfgate/tfgate/internal/tensor"
	tfpb "github.com/tfgate/tfgate/proto/tensorflow"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

func newTest(t *testing.T, cfg Config, s *backend, opts Options) (*Batcher, *fakeClock) {
	t.Helper()
	clk := newFakeClock()
	if opts.Clock == nil {
		opts.Clock = clk
	}
	opts.Key = Key{Model: testModel, Version: 7, Signature: DefaultSignature}
	b := New(cfg, startBackend(t, s), opts)
	return b, clk
}

func rowsOfCalls(cs []call) []int64 {
	out := make([]int64, len(cs))
	for i, c := range cs {
		out[i] = c.rows
	}
	return out
}

func TestBatchesQueuedRequestsWithPadding(t *testing.T) {
	cfg := testCfg()
	cfg.MaxBatchSize = 8
	cfg.AllowedBatchSizes = []int{2, 4, 8}
	s := &backend{}
	b, clk := newTest(t, cfg, s, Options{})
	defer closeBatcher(t, b)

	reqs := []*servingpb.PredictRequest{xReq(t, 1, 3, 0), xReq(t, 2, 3, 100), xReq(t, 2, 3, 200)}
	var chs []<-chan outcome
	for _, r := range reqs {
		chs = append(chs, goDo(context.Background(), b, r))
	}
	waitFor(t, "3 queued requests", func() bool { return b.stats().queuedTasks == 3 })
	clk.Advance(cfg.BatchTimeout)
	for i, ch := range chs {
		wantSame(t, "request "+string(rune('A'+i)), <-ch, reqs[i])
	}
	if got := rowsOfCalls(s.Calls()); len(got) != 1 || got[0] != 8 {
		t.Errorf("backend calls rows = %v, want one call of 8 rows (5 real, padded to 8)", got)
	}
	if got := s.Calls()[0].spec; !proto.Equal(got, spec(1)) {
		t.Errorf("backend model_spec = %v, want %v", got, spec(1))
	}
}

func TestFullBatchGoesWithoutWaiting(t *testing.T) {
	cfg := testCfg()
	cfg.MaxBatchSize = 4
	s := &backend{}
	b, _ := newTest(t, cfg, s, Options{})
	defer closeBatcher(t, b)
	r1, r2 := xReq(t, 2, 2, 0), xReq(t, 2, 2, 50)
	c1 := goDo(context.Background(), b, r1)
	waitFor(t, "first request queued", func() bool { return b.stats().queuedTasks == 1 })
	c2 := goDo(context.Background(), b, r2)
	// No Advance: the batch is full, so it goes at once.
	wantSame(t, "first", <-c1, r1)
	wantSame(t, "second", <-c2, r2)
	if got := rowsOfCalls(s.Calls()); len(got) != 1 || got[0] != 4 {
		t.Errorf("backend calls rows = %v, want [4]", got)
	}
}

func TestIncompatibleRequestsAreNotMixed(t *testing.T) {
	cfg := testCfg()
	s := &backend{}
	b, clk := newTest(t, cfg, s, Options{})
	defer closeBatcher(t, b)
	filtered := xReq(t, 1, 3, 5)
	filtered.OutputFilter = []string{"y"}
	reqs := []*servingpb.PredictRequest{xReq(t, 1, 3, 0), xReq(t, 1, 4, 0), filtered, xReq(t, 2, 3, 9)}
	var chs []<-chan outcome
	for _, r := range reqs {
		chs = append(chs, goDo(context.Background(), b, r))
	}
	waitFor(t, "4 queued requests", func() bool { return b.stats().queuedTasks == 4 })
	if got := b.stats().openBatches; got != 3 {
		t.Errorf("open batches = %d, want 3 (width 3, width 4, output_filter [y])", got)
	}
	clk.Advance(cfg.BatchTimeout)
	for i, ch := range chs {
		wantSame(t, "request", <-ch, reqs[i])
	}
	if n := len(s.Calls()); n != 3 {
		t.Errorf("backend calls = %d, want 3", n)
	}
}

func TestPadVariableLengthInputs(t *testing.T) {
	cfg := testCfg()
	cfg.PadVariableLengthInputs = true
	s := &backend{}
	b, clk := newTest(t, cfg, s, Options{})
	defer closeBatcher(t, b)
	short, long := xReq(t, 1, 2, 1), xReq(t, 1, 3, 20) // x = [[1 2]] and [[20 21 22]]
	c1, c2 := goDo(context.Background(), b, short), goDo(context.Background(), b, long)
	waitFor(t, "2 queued", func() bool { return b.stats().queuedTasks == 2 })
	clk.Advance(cfg.BatchTimeout)
	wantSame(t, "long", <-c2, long)
	got := <-c1
	if got.err != nil {
		t.Fatal(got.err)
	}
	// As TF Serving: short's x is padded to [[1 2 1]] (its first element), so its
	// y row is 3 wide: [1*3+0, 2*3+1, 1*3+2].
	y, err := tensor.Float32s(got.resp.GetOutputs()["y"])
	if err != nil {
		t.Fatal(err)
	}
	if want := []float32{3, 7, 5}; len(y) != 3 || y[0] != want[0] || y[1] != want[1] || y[2] != want[2] {
		t.Errorf("short request's y = %v, want %v", y, want)
	}
	if n := len(s.Calls()); n != 1 {
		t.Errorf("backend calls = %d, want 1", n)
	}
}

func TestDeadlineDrivesEarlyDispatch(t *testing.T) {
	cfg := testCfg()
	s := &backend{}
	clk := newFakeClock()
	const service = 100 * time.Millisecond
	var b *Batcher
	inner := startBackend(t, s)
	b = New(cfg, func(ctx context.Context, req *servingpb.PredictRequest) (*servingpb.PredictResponse, error) {
		clk.Advance(service) // every backend call takes 100ms of fake time
		return inner(ctx, req)
	}, Options{Clock: clk, Key: Key{Model: testModel, Version: 7}})
	defer closeBatcher(t, b)

	// Learn the service time: one request without a deadline.
	c := goDo(context.Background(), b, xReq(t, 1, 2, 0))
	waitFor(t, "warm-up queued", func() bool { return b.stats().queuedTasks == 1 })
	clk.Advance(cfg.BatchTimeout)
	if o := <-c; o.err != nil {
		t.Fatal(o.err)
	}
	if got := b.stats().ewma; got != service {
		t.Fatalf("service time estimate = %v, want %v", got, service)
	}

	// A request with 1s left must be sent by deadline - service time = 900ms, long
	// before the 50s batch timeout. Context deadlines are wall-clock; the fake clock
	// started at the wall clock, so 1s of fake time is far in the wall-clock future.
	ctx, cancel := context.WithDeadline(context.Background(), clk.Now().Add(time.Second))
	defer cancel()
	req := xReq(t, 1, 2, 10)
	c = goDo(ctx, b, req)
	waitFor(t, "deadline request queued", func() bool { return b.stats().queuedTasks == 1 })
	clk.Advance(899 * time.Millisecond)
	if got := b.stats().queuedTasks; got != 1 {
		t.Fatalf("at 899ms: queued = %d, want still 1", got)
	}
	clk.Advance(time.Millisecond)
	wantSame(t, "deadline request", <-c, req)
	if n := len(s.Calls()); n != 2 {
		t.Errorf("backend calls = %d, want 2", n)
	}

	// 50ms left cannot cover the 100ms service time: it goes alone at once (no lone
	// call measured yet), without waiting for any Advance.
	ctx2, cancel2 := context.WithDeadline(context.Background(), clk.Now().Add(50*time.Millisecond))
	defer cancel2()
	req = xReq(t, 1, 2, 30)
	resp, err := b.Do(ctx2, req)
	wantSame(t, "tight deadline goes alone", outcome{resp, err}, req)
	if got := b.stats().ewmaAlone; got != service {
		t.Fatalf("lone service time estimate = %v, want %v", got, service)
	}

	// Now a lone call is known to take 100ms: 50ms left fails fast.
	ctx3, cancel3 := context.WithDeadline(context.Background(), clk.Now().Add(50*time.Millisecond))
	defer cancel3()
	_, err = b.Do(ctx3, xReq(t, 1, 2, 40))
	if !errors.Is(err, ErrDeadline) || !strings.Contains(err.Error(), "expected backend time") {
		t.Errorf("Do with 50ms left and 100ms lone service = %v, want DEADLINE_EXCEEDED naming the expected backend time", err)
	}
	if n := len(s.Calls()); n != 3 {
		t.Errorf("backend calls = %d, want 3 (the fail-fast request must not reach it)", n)
	}
}

func TestCancelWhileQueuedLeavesBatchUnharmed(t *testing.T) {
	cfg := testCfg()
	s := &backend{}
	b, clk := newTest(t, cfg, s, Options{})
	defer closeBatcher(t, b)
	ra, rb, rc := xReq(t, 1, 2, 0), xReq(t, 3, 2, 100), xReq(t, 2, 2, 200)
	ca := goDo(context.Background(), b, ra)
	ctxB, cancelB := context.WithCancel(context.Background())
	cb := goDo(ctxB, b, rb)
	cc := goDo(context.Background(), b, rc)
	waitFor(t, "3 queued", func() bool { return b.stats().queuedTasks == 3 })
	cancelB()
	if o := <-cb; !errors.Is(o.err, context.Canceled) {
		t.Errorf("cancelled caller got %v, want CANCELED", o.err)
	}
	if got := b.stats().queuedTasks; got != 2 {
		t.Errorf("after cancel: queued = %d, want 2", got)
	}
	clk.Advance(cfg.BatchTimeout)
	wantSame(t, "A", <-ca, ra)
	wantSame(t, "C", <-cc, rc)
	if got := rowsOfCalls(s.Calls()); len(got) != 1 || got[0] != 3 {
		t.Errorf("backend calls rows = %v, want [3]: the cancelled 3 rows are not sent", got)
	}
}

func TestCancelInFlightLeavesBatchUnharmed(t *testing.T) {
	cfg := testCfg()
	cfg.MaxBatchSize = 2
	s := &backend{gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	b, _ := newTest(t, cfg, s, Options{})
	defer closeBatcher(t, b)
	ra, rb := xReq(t, 1, 2, 0), xReq(t, 1, 2, 100)
	ctxA, cancelA := context.WithCancel(context.Background())
	ca := goDo(ctxA, b, ra)
	waitFor(t, "A queued", func() bool { return b.stats().queuedTasks == 1 })
	cb := goDo(context.Background(), b, rb)
	<-s.entered // the full batch reached the backend
	cancelA()
	if o := <-ca; !errors.Is(o.err, context.Canceled) {
		t.Errorf("cancelled caller got %v, want CANCELED", o.err)
	}
	close(s.gate)
	wantSame(t, "B", <-cb, rb)
}

func TestQueueFullSheds(t *testing.T) {
	cfg := testCfg()
	cfg.MaxBatchSize = 1
	cfg.MaxEnqueuedBatches = 2
	cfg.MaxInFlightBatches = 1
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { _ = mp.Shutdown(context.Background()) }()
	s := &backend{gate: make(chan struct{}), entered: make(chan struct{}, 4)}
	b, _ := newTest(t, cfg, s, Options{MeterProvider: mp})
	defer closeBatcher(t, b)

	reqs := []*servingpb.PredictRequest{xReq(t, 1, 2, 0), xReq(t, 1, 2, 10), xReq(t, 1, 2, 20)}
	var chs []<-chan outcome
	chs = append(chs, goDo(context.Background(), b, reqs[0]))
	<-s.entered // in flight, blocked
	for _, r := range reqs[1:] {
		chs = append(chs, goDo(context.Background(), b, r))
	}
	waitFor(t, "2 batches queued", func() bool { return b.stats().queuedBatches == 2 })
	_, err := b.Do(context.Background(), xReq(t, 1, 2, 30))
	if !errors.Is(err, ErrQueueFull) {
		t.Fatalf("Do on a full queue = %v, want RESOURCE_EXHAUSTED", err)
	}
	for _, want := range []string{`model "m"`, "version 7", "2 batches", "max_enqueued_batches 2"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("shed message %q does not contain %q", err.Error(), want)
		}
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	if got := sumInt(rm, "tfgate.batching.shed", attribute.String("reason", "queue_full")); got != 1 {
		t.Errorf("shed{reason=queue_full} = %d, want 1", got)
	}
	if got := sumInt(rm, "tfgate.batching.queue_depth"); got != 2 {
		t.Errorf("queue_depth = %d, want 2", got)
	}
	close(s.gate)
	for i, ch := range chs {
		wantSame(t, "admitted request", <-ch, reqs[i])
	}
}

// sumInt adds the int64 sum data points of the named metric that carry every kv.
func sumInt(rm metricdata.ResourceMetrics, name string, kv ...attribute.KeyValue) int64 {
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			s, ok := m.Data.(metricdata.Sum[int64])
			if !ok {
				continue
			}
		points:
			for _, dp := range s.DataPoints {
				for _, want := range kv {
					if v, ok := dp.Attributes.Value(want.Key); !ok || v != want.Value {
						continue points
					}
				}
				n += dp.Value
			}
		}
	}
	return n
}

func TestPoisonedMemberDoesNotFailOthers(t *testing.T) {
	cfg := testCfg()
	s := &backend{}
	b, clk := newTest(t, cfg, s, Options{})
	defer closeBatcher(t, b)
	good1, good2 := xReq(t, 2, 2, 0), xReq(t, 1, 2, 50)
	bad := xReq(t, 1, 2, 0)
	f, _ := tensor.Float32s(bad.Inputs["x"])
	f[1] = poison
	chs := []<-chan outcome{goDo(context.Background(), b, good1), goDo(context.Background(), b, bad), goDo(context.Background(), b, good2)}
	waitFor(t, "3 queued", func() bool { return b.stats().queuedTasks == 3 })
	clk.Advance(cfg.BatchTimeout)
	wantSame(t, "good1", <-chs[0], good1)
	wantSame(t, "good2", <-chs[2], good2)
	o := <-chs[1]
	if status.Code(o.err) != codes.InvalidArgument || !strings.Contains(o.err.Error(), "poison") || !strings.Contains(o.err.Error(), "row 0") {
		t.Errorf("poisoned member got %v, want the backend's own INVALID_ARGUMENT for its row 0", o.err)
	}
	if got := rowsOfCalls(s.Calls()); len(got) != 4 {
		t.Errorf("backend calls rows = %v, want the batch of 4 then each member alone", got)
	}
}

func TestOutputNotPerRowFallsBackToAlone(t *testing.T) {
	cfg := testCfg()
	s := &backend{notPerRow: true}
	b, clk := newTest(t, cfg, s, Options{})
	defer closeBatcher(t, b)
	r1, r2 := xReq(t, 2, 2, 0), xReq(t, 1, 2, 9)
	c1, c2 := goDo(context.Background(), b, r1), goDo(context.Background(), b, r2)
	waitFor(t, "2 queued", func() bool { return b.stats().queuedTasks == 2 })
	clk.Advance(cfg.BatchTimeout)
	for i, o := range []outcome{<-c1, <-c2} {
		if o.err != nil {
			t.Fatalf("request %d: %v", i, o.err)
		}
		if got := o.resp.GetOutputs()["table"].GetTensorShape().GetDim(); len(got) != 1 || got[0].GetSize() != 5 {
			t.Errorf("request %d: table output shape %v, want the backend's own [5]", i, got)
		}
		delete(o.resp.Outputs, "table")
		wantSame(t, "per-row outputs", o, []*servingpb.PredictRequest{r1, r2}[i])
	}
	if got := rowsOfCalls(s.Calls()); len(got) != 3 {
		t.Errorf("backend calls rows = %v, want the batch, then each request alone", got)
	}
}

func TestInvalidRequestsRejectedBeforeBatching(t *testing.T) {
	cfg := testCfg()
	cfg.MaxBatchSize = 4
	s := &backend{}
	b, _ := newTest(t, cfg, s, Options{})
	defer closeBatcher(t, b)
	mismatch := xReq(t, 2, 2, 0)
	mismatch.Inputs["x"].FloatVal = mismatch.Inputs["x"].FloatVal[:3]
	disagree := xReq(t, 2, 2, 0)
	disagree.Inputs["ids"], _ = tensor.FromInt64([]int64{1, 2, 3}, 3, 1)
	tests := []struct {
		name string
		req  *servingpb.PredictRequest
		want string
	}{
		{"too many rows", xReq(t, 5, 2, 0), "more than batching max_batch_size 4"},
		{"values do not match shape", mismatch, `input "x" is malformed`},
		{"inputs disagree on rows", disagree, "same size in dimension 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := b.Do(context.Background(), tc.req)
			if !errors.Is(err, ErrInvalidRequest) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Do(%s) = %v, want INVALID_ARGUMENT containing %q", tc.name, err, tc.want)
			}
		})
	}
	if got := b.stats().queuedTasks + len(s.Calls()); got != 0 {
		t.Errorf("invalid requests reached the queue or backend: %d", got)
	}
}

func TestUnbatchableGoesAlone(t *testing.T) {
	cfg := testCfg()
	s := &backend{}
	b, _ := newTest(t, cfg, s, Options{})
	defer closeBatcher(t, b)
	empty := xReq(t, 0, 3, 0)
	half := &servingpb.PredictRequest{ModelSpec: spec(1), Inputs: map[string]*tfpb.TensorProto{
		"x": {Dtype: tfpb.DataType_DT_HALF, TensorShape: tensor.Shape(1)},
	}}
	resp, err := b.Do(context.Background(), empty)
	wantSame(t, "zero rows", outcome{resp, err}, empty)
	_, err = b.Do(context.Background(), half)
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "input x: tensor dtype mismatch") {
		t.Errorf("DT_HALF request = %v, want the backend's own answer", err)
	}
}

func TestByteLimitSplitsBatches(t *testing.T) {
	cfg := testCfg()
	one := xReq(t, 1, 64, 0)
	rowBytes := proto.Size(one.Inputs["x"])
	cfg.MaxBatchBytes = batchOverheadBytes + 3*rowBytes
	s := &backend{}
	b, clk := newTest(t, cfg, s, Options{})
	defer closeBatcher(t, b)
	var reqs []*servingpb.PredictRequest
	var chs []<-chan outcome
	for i := range 5 {
		r := xReq(t, 1, 64, float32(i*1000))
		reqs = append(reqs, r)
		chs = append(chs, goDo(context.Background(), b, r))
		// Rows, not calls: the first three go out as one call when the third fills
		// the byte limit, and that call may be answered before this looks.
		waitFor(t, "queued or sent", func() bool {
			sent := int64(0)
			for _, r := range rowsOfCalls(s.Calls()) {
				sent += r
			}
			return int64(b.stats().queuedTasks)+sent >= int64(i+1)
		})
	}
	waitFor(t, "last 2 queued", func() bool { return b.stats().queuedTasks == 2 })
	clk.Advance(cfg.BatchTimeout)
	for i, ch := range chs {
		wantSame(t, "request", <-ch, reqs[i])
	}
	calls := s.Calls()
	got := rowsOfCalls(calls)
	slices.Sort(got) // the two batches may reach the backend in either order
	if len(got) != 2 || got[0] != 2 || got[1] != 3 {
		t.Errorf("backend calls rows = %v, want a batch of 3 and a batch of 2", got)
	}
	for _, c := range calls {
		if c.bytes > cfg.MaxBatchBytes {
			t.Errorf("a batch of %d bytes exceeds max_batch_bytes %d", c.bytes, cfg.MaxBatchBytes)
		}
	}
}

func TestCloseFlushesAndRefuses(t *testing.T) {
	cfg := testCfg()
	s := &backend{}
	b, _ := newTest(t, cfg, s, Options{})
	r := xReq(t, 2, 2, 0)
	c := goDo(context.Background(), b, r)
	waitFor(t, "queued", func() bool { return b.stats().queuedTasks == 1 })
	if err := b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	wantSame(t, "flushed on Close", <-c, r)
	_, err := b.Do(context.Background(), xReq(t, 1, 2, 0))
	if !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "shutting down") {
		t.Errorf("Do after Close = %v, want UNAVAILABLE saying it is shutting down", err)
	}
}

func TestCloseGivesUpOnContext(t *testing.T) {
	cfg := testCfg()
	cfg.MaxBatchSize = 1
	s := &backend{gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	b, _ := newTest(t, cfg, s, Options{})
	c := goDo(context.Background(), b, xReq(t, 1, 2, 0))
	<-s.entered
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Close(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Close with a cancelled context = %v, want context.Canceled", err)
	}
	// The error is the test backend's (Invoke's) own status.
	if o := <-c; status.Code(o.err) != codes.Canceled {
		t.Errorf("in-flight request after Close gave up = %v, want CANCELED", o.err)
	}
}

func TestInvalidConfigFailsRequests(t *testing.T) {
	cfg := testCfg()
	cfg.MaxBatchSize = 0
	b := New(cfg, func(context.Context, *servingpb.PredictRequest) (*servingpb.PredictResponse, error) {
		t.Error("backend called with an invalid config")
		return nil, nil
	}, Options{})
	defer closeBatcher(t, b)
	_, err := b.Do(context.Background(), xReq(t, 1, 2, 0))
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "max_batch_size") {
		t.Errorf("Do with max_batch_size 0 = %v, want FAILED_PRECONDITION naming max_batch_size", err)
	}
}
