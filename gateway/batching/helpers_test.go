package batching

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tfgate/tfgate/internal/tensor"
	"github.com/tfgate/tfgate/internal/testwait"
	tfpb "github.com/tfgate/tfgate/proto/tensorflow"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeClock is a manual Clock: timers fire, synchronously and in order, inside
// Advance.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	at   time.Time
	f    func()
	done bool
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if t.done {
			return false
		}
		t.done = true
		return true
	}
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*fakeTimer
	keep := c.timers[:0]
	for _, t := range c.timers {
		switch {
		case t.done:
		case !t.at.After(c.now):
			t.done = true
			due = append(due, t)
		default:
			keep = append(keep, t)
		}
	}
	c.timers = keep
	c.mu.Unlock()
	sort.SliceStable(due, func(i, j int) bool { return due[i].at.Before(due[j].at) })
	for _, t := range due {
		t.f()
	}
}

// waitFor polls cond until it holds; it synchronizes with goroutines, it does not
// measure time (the bound only turns a hang into a failure). It is testwait.Until,
// kept under this name for the many tests of this package that call it.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.Until(t, what, cond)
}

// poison in input x makes the test backend reject the request as INVALID_ARGUMENT.
const poison = -999

// backend is a PredictionService doing deterministic per-row arithmetic, served over
// real loopback TCP. Outputs (each only when its input is present):
//
//	y     float32 [n, d]  = x*3 + column index     (tensor_content)
//	sum   double  [n]     = row sum of x + row sum of ids (double_val)
//	count int32   [n]     = true values in the row of mask (int_val)
//	ids7  int64   [n, k]  = ids * 7                (tensor_content)
//	echo  string  [n]     = text reversed + "!"    (string_val)
type backend struct {
	servingpb.UnimplementedPredictionServiceServer

	// gate, if set, is received from before each call proceeds; entered gets a value
	// as each call starts.
	gate    chan struct{}
	entered chan struct{}
	// cost, if set, simulates compute: called with the call's rows.
	cost func(rows int64)
	// notPerRow adds an output "table" of shape [5], not per row.
	notPerRow bool

	mu    sync.Mutex
	calls []call
}

type call struct {
	rows  int64
	bytes int
	spec  *servingpb.ModelSpec
}

func (s *backend) Calls() []call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

func (s *backend) Predict(ctx context.Context, req *servingpb.PredictRequest) (*servingpb.PredictResponse, error) {
	if s.entered != nil {
		s.entered <- struct{}{}
	}
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	resp, rows, err := compute(req)
	if err == nil && s.notPerRow {
		resp.Outputs["table"], _ = tensor.FromInt32([]int32{1, 2, 3, 4, 5}, 5)
	}
	s.mu.Lock()
	s.calls = append(s.calls, call{rows: rows, bytes: proto.Size(req), spec: req.GetModelSpec()})
	s.mu.Unlock()
	if s.cost != nil {
		s.cost(rows)
	}
	return resp, err
}

func compute(req *servingpb.PredictRequest) (*servingpb.PredictResponse, int64, error) {
	in := req.GetInputs()
	rows := int64(-1)
	for name, tp := range in {
		r, err := tensor.Rows(tp)
		if err != nil {
			return nil, 0, status.Errorf(codes.InvalidArgument, "input %s: %v", name, err)
		}
		if rows >= 0 && r != rows {
			return nil, 0, status.Errorf(codes.InvalidArgument, "inputs disagree on dimension 0")
		}
		rows = r
	}
	out := map[string]*tfpb.TensorProto{}
	width := func(tp *tfpb.TensorProto) int64 {
		d, _ := tensor.Dims(tp)
		if len(d) != 2 {
			return -1
		}
		return d[1]
	}
	sums := make([]float64, max(rows, 0))
	if x := in["x"]; x != nil {
		v, err := tensor.Float32s(x)
		d := width(x)
		if err != nil || d < 0 {
			return nil, 0, status.Errorf(codes.InvalidArgument, "x must be a [n, d] float tensor: %v", err)
		}
		y := make([]float32, len(v))
		for i, f := range v {
			if f == poison {
				return nil, 0, status.Errorf(codes.InvalidArgument, "x row %d holds the poison value %d", int64(i)/d, poison)
			}
			y[i] = f*3 + float32(int64(i)%d)
			sums[int64(i)/d] += float64(f)
		}
		t, _ := tensor.FromFloat32(y, rows, d)
		out["y"], _ = tensor.Content(t)
	}
	if ids := in["ids"]; ids != nil {
		v, err := tensor.Int64s(ids)
		k := width(ids)
		if err != nil || k < 0 {
			return nil, 0, status.Errorf(codes.InvalidArgument, "ids must be a [n, k] int64 tensor: %v", err)
		}
		o := make([]int64, len(v))
		for i, x := range v {
			o[i] = x * 7
			sums[int64(i)/k] += float64(x)
		}
		t, _ := tensor.FromInt64(o, rows, k)
		out["ids7"], _ = tensor.Content(t)
	}
	if in["x"] != nil || in["ids"] != nil {
		out["sum"], _ = tensor.FromFloat64(sums, rows)
	}
	if m := in["mask"]; m != nil {
		v, err := tensor.Bools(m)
		k := width(m)
		if err != nil || k < 0 {
			return nil, 0, status.Errorf(codes.InvalidArgument, "mask must be a [n, k] bool tensor: %v", err)
		}
		c := make([]int32, rows)
		for i, b := range v {
			if b {
				c[int64(i)/k]++
			}
		}
		out["count"], _ = tensor.FromInt32(c, rows)
	}
	if tx := in["text"]; tx != nil {
		v, err := tensor.Strings(tx)
		if err != nil || width(tx) >= 0 {
			return nil, 0, status.Errorf(codes.InvalidArgument, "text must be a [n] string tensor: %v", err)
		}
		e := make([][]byte, len(v))
		for i, s := range v {
			r := slices.Clone(s)
			slices.Reverse(r)
			e[i] = append(r, '!')
		}
		out["echo"], _ = tensor.FromBytes(e, rows)
	}
	if f := req.GetOutputFilter(); len(f) > 0 {
		kept := map[string]*tfpb.TensorProto{}
		for _, name := range f {
			if out[name] == nil {
				return nil, 0, status.Errorf(codes.InvalidArgument, "output_filter names %q, which is not an output", name)
			}
			kept[name] = out[name]
		}
		out = kept
	}
	return &servingpb.PredictResponse{ModelSpec: req.GetModelSpec(), Outputs: out}, rows, nil
}

// startBackend serves s on loopback TCP and returns an Invoke calling it.
func startBackend(t *testing.T, s *backend) Invoke {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	servingpb.RegisterPredictionServiceServer(srv, s)
	go func() { _ = srv.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		srv.Stop()
	})
	cl := servingpb.NewPredictionServiceClient(conn)
	return func(ctx context.Context, req *servingpb.PredictRequest) (*servingpb.PredictResponse, error) {
		return cl.Predict(ctx, req)
	}
}

const testModel = "m"

func spec(version int64) *servingpb.ModelSpec {
	return &servingpb.ModelSpec{Name: testModel, VersionChoice: &servingpb.ModelSpec_Version{Version: wrapperspb.Int64(version)}}
}

// xReq is a request with input x of rows rows and width d; x[r][j] = base + r*10 + j.
func xReq(t testing.TB, rows, d int, base float32) *servingpb.PredictRequest {
	t.Helper()
	v := make([]float32, rows*d)
	for i := range v {
		v[i] = base + float32(i/d*10+i%d)
	}
	x, err := tensor.FromFloat32(v, int64(rows), int64(d))
	if err != nil {
		t.Fatal(err)
	}
	return &servingpb.PredictRequest{ModelSpec: spec(1), Inputs: map[string]*tfpb.TensorProto{"x": x}}
}

// canonical encodes a response's outputs so that two responses compare equal exactly
// when every output has the same dtype, shape and values, bit for bit.
func canonical(t testing.TB, r *servingpb.PredictResponse) []byte {
	t.Helper()
	names := make([]string, 0, len(r.GetOutputs()))
	for n := range r.GetOutputs() {
		names = append(names, n)
	}
	slices.Sort(names)
	var b bytes.Buffer
	for _, n := range names {
		tp := r.GetOutputs()[n]
		dims, err := tensor.Dims(tp)
		if err != nil {
			t.Fatalf("output %s: %v", n, err)
		}
		fmt.Fprintf(&b, "%s %s %v:", n, tp.GetDtype(), dims)
		if tp.GetDtype() == tfpb.DataType_DT_STRING {
			s, err := tensor.Strings(tp)
			if err != nil {
				t.Fatalf("output %s: %v", n, err)
			}
			fmt.Fprintf(&b, "%q", s)
		} else {
			c, err := tensor.Content(tp)
			if err != nil {
				t.Fatalf("output %s: %v", n, err)
			}
			b.Write(c.GetTensorContent())
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// outcome is what one Do returned.
type outcome struct {
	resp *servingpb.PredictResponse
	err  error
}

// goDo runs b.Do in a goroutine and returns the channel its outcome arrives on.
func goDo(ctx context.Context, b *Batcher, req *servingpb.PredictRequest) <-chan outcome {
	ch := make(chan outcome, 1)
	go func() {
		resp, err := b.Do(ctx, req)
		ch <- outcome{resp, err}
	}()
	return ch
}

func closeBatcher(t *testing.T, b *Batcher) {
	t.Helper()
	if err := b.Close(context.Background()); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// wantSame checks that got is a success equal, bit for bit, to the same request sent
// unbatched to the backend.
func wantSame(t *testing.T, what string, got outcome, req *servingpb.PredictRequest) {
	t.Helper()
	if got.err != nil {
		t.Errorf("%s: unexpected error %v", what, got.err)
		return
	}
	want, _, err := compute(req)
	if err != nil {
		t.Fatalf("%s: reference: %v", what, err)
	}
	if g, w := canonical(t, got.resp), canonical(t, want); !bytes.Equal(g, w) {
		t.Errorf("%s: got outputs\n%s\nwant (unbatched)\n%s", what, g, w)
	}
}

func testCfg() Config {
	c := DefaultConfig()
	c.Enabled = true
	c.BatchTimeout = 50 * time.Second // only Advance or a full batch dispatches
	return c
}
