package gateway

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tfgate/tfgate/gateway/route"
	"github.com/tfgate/tfgate/internal/tensor"
	tfpb "github.com/tfgate/tfgate/proto/tensorflow"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

var wireLimits = route.Limits{MaxInstances: 8, MaxTextBytes: 64, MaxRoutingKeyBytes: 16, MaxFeatures: 4}

// randTensor is a tensor of a random dtype and shape, its values in the typed
// field or in tensor_content, and now and then with one value too many.
func randTensor(r *rand.Rand) *tfpb.TensorProto {
	rank := r.IntN(4)
	dims := make([]int64, rank)
	n := 1
	for i := range dims {
		dims[i] = int64(r.IntN(4))
		n *= int(dims[i])
	}
	if r.IntN(8) == 0 {
		n++ // shape and values disagree
	}
	t := &tfpb.TensorProto{TensorShape: tensor.Shape(dims...)}
	switch r.IntN(8) {
	case 0:
		t.Dtype = tfpb.DataType_DT_FLOAT
		for range n {
			t.FloatVal = append(t.FloatVal, r.Float32())
		}
	case 1:
		t.Dtype = tfpb.DataType_DT_DOUBLE
		for range n {
			t.DoubleVal = append(t.DoubleVal, r.NormFloat64())
		}
	case 2:
		t.Dtype = tfpb.DataType_DT_INT32
		for range n {
			t.IntVal = append(t.IntVal, r.Int32()-1<<30)
		}
	case 3:
		t.Dtype = tfpb.DataType_DT_INT64
		for range n {
			t.Int64Val = append(t.Int64Val, r.Int64N(1<<40)-1<<39)
		}
	case 4:
		t.Dtype = tfpb.DataType_DT_STRING
		for range n {
			t.StringVal = append(t.StringVal, fmt.Appendf(nil, "s%d\xff", r.IntN(100)))
		}
	case 5:
		t.Dtype = tfpb.DataType_DT_BOOL
		for range n {
			t.BoolVal = append(t.BoolVal, r.IntN(2) == 0)
		}
	case 6:
		t.Dtype = tfpb.DataType_DT_FLOAT
		t.TensorContent = make([]byte, 4*n)
		for i := range t.TensorContent {
			t.TensorContent[i] = byte(r.IntN(256))
		}
	default:
		t.Dtype = tfpb.DataType_DT_INT64
		t.TensorContent = make([]byte, 8*n+r.IntN(2)) // now and then not a whole element
	}
	return t
}

func randTensors(r *rand.Rand) map[string]*tfpb.TensorProto {
	m := map[string]*tfpb.TensorProto{}
	for i := range 1 + r.IntN(4) {
		m[fmt.Sprintf("in_%d_%d", i, r.IntN(1000))] = randTensor(r)
	}
	return m
}

var deterministic = proto.MarshalOptions{Deterministic: true}

func mustMarshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := deterministic.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func backendSpec() *servingpb.ModelSpec {
	return &servingpb.ModelSpec{Name: "m", VersionChoice: &servingpb.ModelSpec_Version{Version: wrapperspb.Int64(3)}, SignatureName: "serving_default"}
}

func errText(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// The pass-through is the decode-and-encode path's result, byte for byte: over
// random requests, the backend request carrying the kept raw_inputs is what
// proto.Marshal makes of the decoded request's (deterministically; the caller's
// bytes were), the checks give the same answers, and the caller's response
// carrying the kept outputs is what proto.Marshal makes of the decoded ones.
func TestPassThroughMatchesDecodeAndEncode(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		// Request direction.
		in := &tfgatev1.PredictRequest{Model: "m", RoutingKey: "k", RawInputs: randTensors(r), SignatureName: "serving_default"}
		if r.IntN(2) == 0 {
			in.Target = &tfgatev1.PredictRequest_Version{Version: 3}
		}
		b := mustMarshal(t, in)

		var std tfgatev1.PredictRequest
		if err := proto.Unmarshal(b, &std); err != nil {
			t.Fatal(err)
		}
		want := mustMarshal(t, &servingpb.PredictRequest{ModelSpec: backendSpec(), Inputs: std.GetRawInputs()})

		d := decodedPredict{req: new(tfgatev1.PredictRequest)}
		d.decode(bytes.Clone(b))
		raw := d.rawInputs()
		if d.err != nil || raw == nil {
			t.Fatalf("request %d: not passed through (err %v): %v", i, d.err, in)
		}
		if len(d.req.GetRawInputs()) != 0 || !proto.Equal(d.req, &tfgatev1.PredictRequest{Model: in.Model, Target: in.Target, RoutingKey: in.RoutingKey, SignatureName: in.SignatureName}) {
			t.Fatalf("request %d: decoded envelope %v, want %v without raw_inputs", i, d.req, in)
		}
		errStd, errRaw := checkRequest(&std, nil, wireLimits), checkRequest(d.req, raw, wireLimits)
		if (errStd == nil) != (errRaw == nil) || len(in.RawInputs) == 1 && errText(errStd) != errText(errRaw) {
			t.Fatalf("request %d: checkRequest of the decoded request = %v, of the kept one = %v", i, errStd, errRaw)
		}
		breq := &servingpb.PredictRequest{ModelSpec: backendSpec()}
		setInputs(breq, raw)
		if got := mustMarshal(t, breq); !bytes.Equal(got, want) {
			t.Fatalf("request %d: backend request\n got %x\nwant %x", i, got, want)
		}
		if rows := batchRows(breq); len(in.RawInputs) == 1 {
			for _, tp := range in.RawInputs {
				if dims, _ := tensor.Dims(tp); len(dims) > 0 && rows != dims[0] || len(dims) == 0 && rows != 0 {
					t.Fatalf("request %d: batchRows = %d, dims %v", i, rows, dims)
				}
			}
		}
		if err := decodeInputs(breq); err != nil || !equalTensors(breq.GetInputs(), std.GetRawInputs()) {
			t.Fatalf("request %d: decodeInputs = %v, inputs %v, want %v", i, err, breq.GetInputs(), std.GetRawInputs())
		}

		// Response direction.
		out := &servingpb.PredictResponse{ModelSpec: backendSpec(), Outputs: randTensors(r)}
		rb := mustMarshal(t, out)
		var stdResp servingpb.PredictResponse
		if err := proto.Unmarshal(rb, &stdResp); err != nil {
			t.Fatal(err)
		}
		caller := func() *tfgatev1.PredictResponse {
			return &tfgatev1.PredictResponse{Model: "m", Version: 3, Arm: "a", Experiment: "e", Route: tfgatev1.RouteKind_ROUTE_KIND_EXPERIMENT}
		}
		wantResp := caller()
		wantResp.RawOutputs = stdResp.GetOutputs()
		want = mustMarshal(t, wantResp)

		var fast servingpb.PredictResponse
		if err := newBackendCodec().Unmarshal(mem.BufferSlice{mem.SliceBuffer(bytes.Clone(rb))}, &fast); err != nil {
			t.Fatal(err)
		}
		if deferredOutputs(&fast) == nil || len(fast.GetOutputs()) != 0 || !proto.Equal(fast.GetModelSpec(), out.GetModelSpec()) {
			t.Fatalf("response %d: outputs not kept, or model spec %v lost", i, fast.GetModelSpec())
		}
		got := caller()
		got.RawOutputs = fast.GetOutputs()
		got.ProtoReflect().SetUnknown(takeOutputs(&fast, fieldRawOutputs))
		if g := mustMarshal(t, got); !bytes.Equal(g, want) {
			t.Fatalf("response %d: caller's response\n got %x\nwant %x", i, g, want)
		}
		var typed servingpb.PredictResponse // the typed path decodes them
		if err := newBackendCodec().Unmarshal(mem.BufferSlice{mem.SliceBuffer(bytes.Clone(rb))}, &typed); err != nil {
			t.Fatal(err)
		}
		if err := decodeOutputs(&typed); err != nil || !proto.Equal(&typed, &stdResp) {
			t.Fatalf("response %d: decodeOutputs = %v, %v, want %v", i, err, &typed, &stdResp)
		}
	}
}

func equalTensors(a, b map[string]*tfpb.TensorProto) bool {
	return proto.Equal(&servingpb.PredictRequest{Inputs: a}, &servingpb.PredictRequest{Inputs: b})
}

// passThroughSeeds are well-formed requests and responses, and forms the
// pass-through declines: a key that is not UTF-8, a repeated key, a record with a
// two-byte tag, a map entry with a third field.
func passThroughSeeds(t testing.TB) [][]byte {
	r := rand.New(rand.NewPCG(3, 4))
	var out [][]byte
	for range 4 {
		out = append(out, mustMarshal(t, &tfgatev1.PredictRequest{Model: "m", RawInputs: randTensors(r)}))
		out = append(out, mustMarshal(t, &servingpb.PredictResponse{ModelSpec: backendSpec(), Outputs: randTensors(r)}))
	}
	ids, _ := tensor.FromInt64([]int64{1, 2}, 1, 2)
	entry := mustMarshal(t, &tfgatev1.PredictRequest{RawInputs: map[string]*tfpb.TensorProto{"ids": ids}})
	out = append(out, append(bytes.Clone(entry), entry...))                                  // repeated key
	out = append(out, append([]byte{0xb2, 0x00}, entry[1:]...))                              // two-byte tag
	out = append(out, bytes.ReplaceAll(bytes.Clone(entry), []byte("ids"), []byte("i\xffs"))) // not UTF-8
	out = append(out, append(mustMarshal(t, &tfgatev1.PredictRequest{Model: "m", Instances: text("hello")}), entry...))
	return out
}

// FuzzPredictRequestCodec: whatever bytes arrive, the gateway's codec makes of
// them what proto.Unmarshal does -- the same request, or the same error.
func FuzzPredictRequestCodec(f *testing.F) {
	for _, b := range passThroughSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var std tfgatev1.PredictRequest
		errStd := proto.Unmarshal(b, &std)
		d := decodedPredict{req: new(tfgatev1.PredictRequest)}
		d.decode(bytes.Clone(b))
		if errText(d.err) != errText(errStd) {
			t.Fatalf("codec error %v, proto.Unmarshal's %v", d.err, errStd)
		}
		if errStd != nil {
			return
		}
		raw := d.rawInputs()
		got := proto.Clone(d.req).(*tfgatev1.PredictRequest)
		if raw != nil {
			for _, w := range raw.tensors {
				want := tensor.HeaderOf(std.GetRawInputs()[string(w.key)])
				if w.hdr != want {
					t.Fatalf("kept raw_inputs[%q] header %+v, decoded %+v", w.key, w.hdr, want)
				}
			}
			if err := (proto.UnmarshalOptions{Merge: true}).Unmarshal(raw.recs, got); err != nil {
				t.Fatalf("kept raw_inputs do not decode: %v", err)
			}
		}
		if !proto.Equal(got, &std) {
			t.Fatalf("codec decoded %v, proto.Unmarshal %v", got, &std)
		}
		errA, errB := checkRequest(&std, nil, wireLimits), checkRequest(d.req, raw, wireLimits)
		if (errA == nil) != (errB == nil) || len(std.GetRawInputs()) <= 1 && errText(errA) != errText(errB) {
			t.Fatalf("checkRequest: decoded %v, kept %v", errA, errB)
		}
		if raw != nil {
			breq := &servingpb.PredictRequest{ModelSpec: backendSpec()}
			setInputs(breq, raw)
			var back servingpb.PredictRequest
			if err := proto.Unmarshal(mustMarshal(t, breq), &back); err != nil || !equalTensors(back.GetInputs(), std.GetRawInputs()) {
				t.Fatalf("backend request decodes to %v (%v), want inputs %v", &back, err, std.GetRawInputs())
			}
		}
	})
}

// FuzzBackendResponseCodec: the backend codec makes of any bytes what
// proto.Unmarshal does, once the kept outputs are decoded, and the caller's
// response carries the same outputs.
func FuzzBackendResponseCodec(f *testing.F) {
	for _, b := range passThroughSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var std servingpb.PredictResponse
		errStd := proto.Unmarshal(b, &std)
		var fast servingpb.PredictResponse
		err := newBackendCodec().Unmarshal(mem.BufferSlice{mem.SliceBuffer(bytes.Clone(b))}, &fast)
		if errText(err) != errText(errStd) {
			t.Fatalf("codec error %v, proto.Unmarshal's %v", err, errStd)
		}
		if errStd != nil {
			return
		}
		caller := &tfgatev1.PredictResponse{Model: "m", RawOutputs: fast.GetOutputs()}
		caller.ProtoReflect().SetUnknown(takeOutputs(proto.Clone(&fast).(*servingpb.PredictResponse), fieldRawOutputs))
		var back tfgatev1.PredictResponse
		if err := proto.Unmarshal(mustMarshal(t, caller), &back); err != nil || !equalTensors(back.GetRawOutputs(), std.GetOutputs()) {
			t.Fatalf("caller's response decodes to %v (%v), want outputs %v", &back, err, std.GetOutputs())
		}
		if err := decodeOutputs(&fast); err != nil || !proto.Equal(&fast, &std) {
			t.Fatalf("decodeOutputs = %v: %v, proto.Unmarshal %v", err, &fast, &std)
		}
	})
}
