package batching

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/tfgate/tfgate/internal/tensor"
	tfpb "github.com/tfgate/tfgate/proto/tensorflow"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

// randomTensor is a tensor of dtype dt and shape dims, in typed (packed) form or,
// when content, as tensor_content.
func randomTensor(t *testing.T, r *rand.Rand, dt tfpb.DataType, dims []int64, content bool) *tfpb.TensorProto {
	t.Helper()
	n, err := tensor.NumElements(dims)
	if err != nil {
		t.Fatal(err)
	}
	var tp *tfpb.TensorProto
	switch dt {
	case tfpb.DataType_DT_FLOAT:
		v := make([]float32, n)
		for i := range v {
			v[i] = randomFloat(r)
		}
		tp, err = tensor.FromFloat32(v, dims...)
	case tfpb.DataType_DT_DOUBLE:
		v := make([]float64, n)
		for i := range v {
			v[i] = r.NormFloat64() * 1e6
		}
		tp, err = tensor.FromFloat64(v, dims...)
	case tfpb.DataType_DT_INT32:
		v := make([]int32, n)
		for i := range v {
			v[i] = int32(r.Uint32())
		}
		tp, err = tensor.FromInt32(v, dims...)
	case tfpb.DataType_DT_INT64:
		v := make([]int64, n)
		for i := range v {
			v[i] = int64(r.Uint64()) >> r.IntN(64)
		}
		tp, err = tensor.FromInt64(v, dims...)
	case tfpb.DataType_DT_BOOL:
		v := make([]bool, n)
		for i := range v {
			v[i] = r.IntN(2) == 0
		}
		tp, err = tensor.FromBool(v, dims...)
	}
	if err != nil {
		t.Fatal(err)
	}
	if content {
		if tp, err = tensor.Content(tp); err != nil {
			t.Fatal(err)
		}
	}
	return tp
}

// kept is msg with its tensor map moved into its unknown fields as the encoded
// records of field num, the way the gateway's codecs keep them.
func kept[M proto.Message](t *testing.T, msg M, clear func(M)) M {
	t.Helper()
	out := proto.Clone(msg).(M)
	clear(out)
	only := proto.Clone(msg).(M)
	only.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if !fd.IsMap() {
			only.ProtoReflect().Clear(fd)
		}
		return true
	})
	recs, err := proto.Marshal(only)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) > 0 {
		out.ProtoReflect().SetUnknown(recs)
	}
	return out
}

// TestWireMatchesDecoded is the differential test of the wire path (wire.go):
// over random batches of random tensors in every form it takes, the batched
// request assembled from kept inputs and the members' responses split from kept
// outputs decode to exactly what the decoded path builds, with the same
// compatibility keys and byte estimates.
func TestWireMatchesDecoded(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 1))
	dtypes := []tfpb.DataType{tfpb.DataType_DT_FLOAT, tfpb.DataType_DT_DOUBLE, tfpb.DataType_DT_INT32, tfpb.DataType_DT_INT64, tfpb.DataType_DT_BOOL}
	ctx := context.Background()
	for iter := range 400 {
		cfg := testCfg()
		cfg.MaxBatchSize = 32
		if r.IntN(2) == 0 {
			cfg.AllowedBatchSizes = []int{4, 16, 32}
		}
		b := New(cfg, nil, Options{})
		nin := 1 + r.IntN(3)
		type input struct {
			name  string
			dt    tfpb.DataType
			inner []int64
		}
		ins := make([]input, nin)
		for i := range ins {
			ins[i] = input{name: string(rune('a'+i)) + "_in", dt: dtypes[r.IntN(len(dtypes))]}
			for range r.IntN(3) {
				ins[i].inner = append(ins[i].inner, int64(r.IntN(4)))
			}
		}
		members := 1 + r.IntN(5)
		dec, wire := &batch{}, &batch{}
		for m := range members {
			rows := int64(1 + r.IntN(4))
			req := &servingpb.PredictRequest{ModelSpec: spec(1), Inputs: map[string]*tfpb.TensorProto{}, OutputFilter: []string{"y"}}
			for _, in := range ins {
				req.Inputs[in.name] = randomTensor(t, r, in.dt, append([]int64{rows}, in.inner...), r.IntN(2) == 0)
			}
			wreq := kept(t, req, func(q *servingpb.PredictRequest) { q.Inputs = nil })
			td, ok, err := b.prepare(ctx, req)
			if err != nil || !ok {
				t.Fatalf("iter %d member %d: decoded prepare = %v, %v", iter, m, ok, err)
			}
			tw, ok, err := b.prepare(ctx, wreq)
			if err != nil || !ok || tw.wire == nil {
				t.Fatalf("iter %d member %d: wire prepare = %v, %v, wire %v", iter, m, ok, err, tw != nil && tw.wire != nil)
			}
			if td.key != tw.key || td.rowBytes != tw.rowBytes || td.rows != tw.rows {
				t.Fatalf("iter %d member %d: wire task key %q rowBytes %d rows %d, decoded %q %d %d", iter, m, tw.key, tw.rowBytes, tw.rows, td.key, td.rowBytes, td.rows)
			}
			if r.IntN(8) == 0 { // now and then a batch mixes a decoded member in
				decoded := *td
				decoded.req = proto.Clone(req).(*servingpb.PredictRequest)
				tw = &decoded
			}
			dec.tasks, dec.rows = append(dec.tasks, td), dec.rows+td.rows
			wire.tasks, wire.rows = append(wire.tasks, tw), wire.rows+tw.rows
		}
		dreq, drows, err := b.assemble(dec)
		if err != nil {
			t.Fatalf("iter %d: assemble: %v", iter, err)
		}
		wreq, wrows, err := b.assemble(wire)
		if err != nil {
			t.Fatalf("iter %d: wire assemble: %v", iter, err)
		}
		if err := tensor.DecodeKept(wreq, fieldReqInputs); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(dreq, wreq) || len(drows) != len(wrows) {
			t.Fatalf("iter %d: wire batched request\n%v\ndecoded\n%v", iter, wreq, dreq)
		}

		// The response: every input echoed as an output, in a random form.
		sent := b.cfg.paddedSize(dec.rows)
		resp := &servingpb.PredictResponse{ModelSpec: spec(1), Outputs: map[string]*tfpb.TensorProto{}}
		for _, in := range ins {
			resp.Outputs["y"+in.name] = randomTensor(t, r, in.dt, append([]int64{sent}, in.inner...), r.IntN(2) == 0)
		}
		if r.IntN(10) == 0 { // an output that does not follow the rows
			resp.Outputs["bad"] = randomTensor(t, r, tfpb.DataType_DT_FLOAT, []int64{sent + 1}, false)
		}
		wresp := kept(t, resp, func(p *servingpb.PredictResponse) { p.Outputs = nil })
		dparts, derr := split(resp, drows, sent)
		wparts, werr := split(wresp, wrows, sent)
		if (derr == nil) != (werr == nil) || derr != nil && derr.Error() != werr.Error() {
			t.Fatalf("iter %d: split errors: wire %v, decoded %v", iter, werr, derr)
		}
		for i := range dparts {
			if len(tensor.KeptRecords(wparts[i].ProtoReflect(), fieldRespOutputs)) == 0 {
				t.Fatalf("iter %d member %d: the kept outputs were not split as wire bytes", iter, i)
			}
			if err := tensor.DecodeKept(wparts[i], fieldRespOutputs); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(dparts[i], wparts[i]) {
				t.Fatalf("iter %d member %d: wire split\n%v\ndecoded\n%v", iter, i, wparts[i], dparts[i])
			}
		}
	}
}

// TestWireDeclines: inputs the wire path does not take go the decoded way, with
// the decoded path's decisions and errors (and the ones it takes decide alike).
func TestWireDeclines(t *testing.T) {
	b := New(testCfg(), nil, Options{})
	ctx := context.Background()
	for name, req := range map[string]*servingpb.PredictRequest{
		"strings":    {ModelSpec: spec(1), Inputs: map[string]*tfpb.TensorProto{"s": mustT(tensor.FromStrings([]string{"a", "b"}, 2))}},
		"scalar":     {ModelSpec: spec(1), Inputs: map[string]*tfpb.TensorProto{"s": mustT(tensor.FromFloat32([]float32{1}))}},
		"mismatch":   {ModelSpec: spec(1), Inputs: map[string]*tfpb.TensorProto{"s": {Dtype: tfpb.DataType_DT_FLOAT, TensorShape: tensor.Shape(3), FloatVal: []float32{1}}}},
		"rows":       {ModelSpec: spec(1), Inputs: map[string]*tfpb.TensorProto{"a": mustT(tensor.FromFloat32([]float32{1}, 1)), "b": mustT(tensor.FromFloat32([]float32{1, 2}, 2))}},
		"too many":   {ModelSpec: spec(1), Inputs: map[string]*tfpb.TensorProto{"a": mustT(tensor.FromFloat32(make([]float32, 1000), 1000))}},
		"float_val":  {ModelSpec: spec(1), Inputs: map[string]*tfpb.TensorProto{"a": mustT(tensor.FromFloat32([]float32{1, 2}, 2))}},
		"no content": {ModelSpec: spec(1), Inputs: map[string]*tfpb.TensorProto{"a": {Dtype: tfpb.DataType_DT_INT64, TensorShape: tensor.Shape(1, 0)}}},
	} {
		t.Run(name, func(t *testing.T) {
			wreq := kept(t, req, func(q *servingpb.PredictRequest) { q.Inputs = nil })
			td, okd, errd := b.prepare(ctx, proto.Clone(req).(*servingpb.PredictRequest))
			tw, okw, errw := b.prepare(ctx, wreq)
			if okd != okw || (errd == nil) != (errw == nil) || errd != nil && errd.Error() != errw.Error() {
				t.Fatalf("wire prepare %v, %v; decoded %v, %v", okw, errw, okd, errd)
			}
			if okd && td.key != tw.key {
				t.Fatalf("keys: wire %q, decoded %q", tw.key, td.key)
			}
		})
	}
}

func mustT(tp *tfpb.TensorProto, err error) *tfpb.TensorProto {
	if err != nil {
		panic(err)
	}
	return tp
}

// BenchmarkWireBatch is the batcher's own work for one batch of 16 requests like
// make bench's (input_ids and attention_mask, [1, 32] int64; outputs [16, 8]
// float and [16] int64), arriving with their tensors kept encoded as the
// gateway's raw path sends them: prepare each member, assemble the batched
// request and split the response. decoded is the path before wire.go (the
// gateway decoded the inputs, the backend codec's outputs were decoded) in the
// same run.
//
//	go test -run '^$' -bench WireBatch -benchmem ./gateway/batching
func BenchmarkWireBatch(b *testing.B) {
	t := &testing.T{}
	r := rand.New(rand.NewPCG(1, 2))
	const members = 16
	reqs := make([]*servingpb.PredictRequest, members)
	for i := range reqs {
		q := &servingpb.PredictRequest{ModelSpec: spec(1), Inputs: map[string]*tfpb.TensorProto{
			"input_ids":      randomTensor(t, r, tfpb.DataType_DT_INT64, []int64{1, 32}, false),
			"attention_mask": randomTensor(t, r, tfpb.DataType_DT_INT64, []int64{1, 32}, false),
		}}
		reqs[i] = kept(t, q, func(q *servingpb.PredictRequest) { q.Inputs = nil })
	}
	resp := kept(t, &servingpb.PredictResponse{ModelSpec: spec(1), Outputs: map[string]*tfpb.TensorProto{
		"scores": randomTensor(t, r, tfpb.DataType_DT_FLOAT, []int64{members, 8}, false),
		"class":  randomTensor(t, r, tfpb.DataType_DT_INT64, []int64{members}, false),
	}}, func(p *servingpb.PredictResponse) { p.Outputs = nil })
	cfg := testCfg()
	cfg.MaxBatchSize = 32
	bt := New(cfg, nil, Options{})
	ctx := context.Background()
	for _, mode := range []string{"decoded", "wire"} {
		b.Run(mode, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				batch := &batch{}
				for _, q := range reqs {
					q = proto.CloneOf(q)
					if mode == "decoded" {
						if err := tensor.DecodeKept(q, fieldReqInputs); err != nil {
							b.Fatal(err)
						}
					}
					tk, ok, err := bt.prepare(ctx, q)
					if err != nil || !ok {
						b.Fatal(ok, err)
					}
					batch.tasks, batch.rows = append(batch.tasks, tk), batch.rows+tk.rows
				}
				req, rows, err := bt.assemble(batch)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := proto.Marshal(req); err != nil {
					b.Fatal(err)
				}
				p := proto.CloneOf(resp)
				if mode == "decoded" {
					if err := tensor.DecodeKept(p, fieldRespOutputs); err != nil {
						b.Fatal(err)
					}
				}
				parts, err := split(p, rows, members)
				if err != nil {
					b.Fatal(err)
				}
				for _, part := range parts {
					if _, err := proto.Marshal(part); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// FuzzWire feeds arbitrary bytes to the wire path as a member's kept inputs and
// as a backend's kept outputs: it never panics, and whatever it takes it
// decides, assembles and splits as the decoded path does from the same bytes
// decoded (proto.Unmarshal), which also decides what it declines.
func FuzzWire(f *testing.F) {
	seed := func(m proto.Message) []byte {
		b, _ := proto.Marshal(m)
		return b
	}
	in := seed(&servingpb.PredictRequest{Inputs: map[string]*tfpb.TensorProto{
		"a": mustT(tensor.FromInt64([]int64{1, 2, 3, -4}, 2, 2)), "b": mustT(tensor.FromFloat32([]float32{1, 2}, 2))}})
	out := seed(&servingpb.PredictResponse{Outputs: map[string]*tfpb.TensorProto{
		"y": mustT(tensor.FromFloat32([]float32{1, 2, 3, 4, 5, 6, 7, 8}, 4, 2)), "z": mustT(tensor.FromBool([]bool{true, false, true, true}, 4))}})
	f.Add(in, out)
	f.Add([]byte{0x12, 0x03, 0x0a, 0x01, 0x61}, []byte{0x0a, 0x00})
	f.Fuzz(func(t *testing.T, inRecs, outRecs []byte) {
		cfg := testCfg()
		cfg.MaxBatchSize = 8
		cfg.AllowedBatchSizes = []int{4, 8}
		b := New(cfg, nil, Options{})
		ctx := context.Background()
		if len(inRecs) == 0 || inRecs[0] != 0x12 {
			return
		}
		wreq := &servingpb.PredictRequest{ModelSpec: spec(1)}
		wreq.ProtoReflect().SetUnknown(slices.Clone(inRecs))
		dreq := &servingpb.PredictRequest{ModelSpec: spec(1)}
		if err := proto.Unmarshal(inRecs, dreq); err != nil {
			return // the gateway's codec declines it before the batcher
		}
		dreq.ModelSpec = spec(1)
		tw, okw, errw := b.prepare(ctx, wreq)
		td, okd, errd := b.prepare(ctx, dreq)
		if okw != okd || (errw == nil) != (errd == nil) || errd != nil && errw.Error() != errd.Error() {
			t.Fatalf("wire prepare %v, %v; decoded %v, %v", okw, errw, okd, errd)
		}
		if !okd {
			return
		}
		if tw.key != td.key || tw.rows != td.rows {
			t.Fatalf("wire task %q %d rows, decoded %q %d", tw.key, tw.rows, td.key, td.rows)
		}
		bw := &batch{tasks: []*task{tw}, rows: tw.rows}
		bd := &batch{tasks: []*task{td}, rows: td.rows}
		aw, rows, errw := b.assemble(bw)
		ad, _, errd := b.assemble(bd)
		if (errw == nil) != (errd == nil) {
			t.Fatalf("assemble: wire %v, decoded %v", errw, errd)
		}
		if errd != nil {
			return
		}
		if err := tensor.DecodeKept(aw, fieldReqInputs); err != nil || !proto.Equal(aw, ad) {
			t.Fatalf("assembled: wire %v (%v), decoded %v", aw, err, ad)
		}
		if len(outRecs) == 0 || outRecs[0] != 0x0a {
			return
		}
		dresp := &servingpb.PredictResponse{}
		if err := proto.Unmarshal(outRecs, dresp); err != nil {
			return
		}
		wresp := &servingpb.PredictResponse{}
		wresp.ProtoReflect().SetUnknown(slices.Clone(outRecs))
		sent := cfg.paddedSize(bd.rows)
		pw, errw := split(wresp, rows, sent)
		pd, errd := split(dresp, rows, sent)
		if (errw == nil) != (errd == nil) {
			t.Fatalf("split: wire %v, decoded %v", errw, errd)
		}
		for i := range pd {
			if err := tensor.DecodeKept(pw[i], fieldRespOutputs); err != nil || !proto.Equal(pw[i], pd[i]) {
				t.Fatalf("member %d: wire %v (%v), decoded %v", i, pw[i], err, pd[i])
			}
		}
	})
}
