package batching

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/tfgate/tfgate/internal/tensor"
	tfpb "github.com/tfgate/tfgate/proto/tensorflow"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

// fuzzTensor builds a tensor of the fuzzed dtype and shape from raw bytes:
// tensor_content for fixed-size dtypes, one string per byte for DT_STRING.
func fuzzTensor(dt uint8, rows, width uint8, content []byte) *tfpb.TensorProto {
	tp := &tfpb.TensorProto{Dtype: tfpb.DataType(dt % 12), TensorShape: tensor.Shape(int64(rows%7), int64(width%4))}
	if tp.Dtype == tfpb.DataType_DT_STRING {
		for _, c := range content {
			tp.StringVal = append(tp.StringVal, bytes.Repeat([]byte{c}, int(c%3)))
		}
		return tp
	}
	tp.TensorContent = content
	return tp
}

// FuzzBatchPath drives outside tensors through the batcher's validation, assembly and
// splitting with an identity model (outputs = the batched inputs): validation either
// rejects a request with INVALID_ARGUMENT or accepts it, accepted compatible requests
// always assemble, and each gets back exactly its own rows.
func FuzzBatchPath(f *testing.F) {
	f.Add(uint8(1), uint8(2), uint8(2), make([]byte, 16), uint8(1), uint8(2), []byte{1, 2, 3, 4, 5, 6, 7, 8}, false)
	f.Add(uint8(7), uint8(3), uint8(1), []byte("abc"), uint8(2), uint8(1), []byte("xy"), false)
	f.Add(uint8(10), uint8(2), uint8(3), []byte{1, 0, 1, 1, 0, 0}, uint8(1), uint8(2), []byte{1, 1}, true)
	f.Add(uint8(9), uint8(1), uint8(2), make([]byte, 16), uint8(1), uint8(3), make([]byte, 24), true)
	f.Add(uint8(3), uint8(9), uint8(1), make([]byte, 3), uint8(0), uint8(1), []byte{}, false)
	f.Fuzz(func(t *testing.T, dt, rows1, w1 uint8, c1 []byte, rows2, w2 uint8, c2 []byte, ragged bool) {
		cfg := DefaultConfig()
		cfg.Enabled = true
		cfg.MaxBatchSize = 8
		cfg.AllowedBatchSizes = []int{2, 4, 8}
		cfg.PadVariableLengthInputs = ragged
		b := New(cfg, nil, Options{})
		defer func() { _ = b.Close(context.Background()) }()
		var tasks []*task
		for _, in := range []*tfpb.TensorProto{fuzzTensor(dt, rows1, w1, c1), fuzzTensor(dt, rows2, w2, c2)} {
			req := &servingpb.PredictRequest{ModelSpec: spec(1), Inputs: map[string]*tfpb.TensorProto{"x": in}}
			tk, ok, err := b.prepare(context.Background(), req)
			if err != nil {
				if !errors.Is(err, ErrInvalidRequest) {
					t.Fatalf("prepare rejected %v with %v, want INVALID_ARGUMENT", in, err)
				}
				return
			}
			if !ok {
				return // sent alone, unchanged
			}
			tasks = append(tasks, tk)
		}
		if tasks[0].key != tasks[1].key || tasks[0].rows+tasks[1].rows > int64(cfg.MaxBatchSize) {
			return // never batched together
		}
		bt := &batch{tasks: tasks, rows: tasks[0].rows + tasks[1].rows}
		req, rows, err := b.assemble(bt)
		if err != nil {
			t.Fatalf("validated members do not assemble: %v", err)
		}
		parts, err := split(&servingpb.PredictResponse{Outputs: req.GetInputs()}, rows, cfg.paddedSize(bt.rows))
		if err != nil {
			t.Fatalf("split of the identity output: %v", err)
		}
		for i, tk := range tasks {
			got, want := parts[i].GetOutputs()["x"], tk.req.GetInputs()["x"]
			gd, _ := tensor.Dims(got)
			wd, _ := tensor.Dims(want)
			if gd[0] != wd[0] {
				t.Fatalf("member %d got %d rows, sent %d", i, gd[0], wd[0])
			}
			if ragged && !equalDims(gd, wd) {
				continue // inner dims were padded, as TF Serving does
			}
			if !bytes.Equal(fuzzValues(t, got), fuzzValues(t, want)) {
				t.Fatalf("member %d got other rows back", i)
			}
		}
	})
}

func equalDims(a, b []int64) bool { return slices.Equal(a, b) }

func fuzzValues(t *testing.T, tp *tfpb.TensorProto) []byte {
	t.Helper()
	if tp.GetDtype() == tfpb.DataType_DT_STRING {
		s, err := tensor.Strings(tp)
		if err != nil {
			t.Fatal(err)
		}
		return bytes.Join(s, []byte{0xff})
	}
	c, err := tensor.Content(tp)
	if err != nil {
		t.Fatal(err)
	}
	return c.GetTensorContent()
}
