package tensor

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	tfpb "github.com/tfgate/tfgate/proto/tensorflow"
)

// headerSeeds are tensors of every form ParseHeader reads, and some it declines.
func headerSeeds(t testing.TB) [][]byte {
	t.Helper()
	msgs := []*tfpb.TensorProto{
		{},
		{Dtype: tfpb.DataType_DT_INT64, TensorShape: Shape(1, 32), Int64Val: make([]int64, 32)},
		{Dtype: tfpb.DataType_DT_FLOAT, TensorShape: Shape(2, 3), FloatVal: []float32{1, 2, 3, 4, 5, 6}},
		{Dtype: tfpb.DataType_DT_DOUBLE, TensorShape: Shape(1), DoubleVal: []float64{1}},
		{Dtype: tfpb.DataType_DT_INT32, TensorShape: Shape(2), IntVal: []int32{-1, 1 << 30}},
		{Dtype: tfpb.DataType_DT_BOOL, TensorShape: Shape(3), BoolVal: []bool{true, false, true}},
		{Dtype: tfpb.DataType_DT_STRING, TensorShape: Shape(2), StringVal: [][]byte{[]byte("a"), {0xff}}},
		{Dtype: tfpb.DataType_DT_FLOAT, TensorShape: Shape(1, 2), TensorContent: make([]byte, 8), VersionNumber: 3},
		{Dtype: tfpb.DataType_DT_FLOAT, TensorShape: &tfpb.TensorShapeProto{UnknownRank: true}},
		{Dtype: tfpb.DataType_DT_FLOAT, TensorShape: &tfpb.TensorShapeProto{Dim: []*tfpb.TensorShapeProto_Dim{{Size: -1, Name: "batch"}}}},
		{Dtype: tfpb.DataType_DT_HALF, TensorShape: Shape(1), HalfVal: []int32{1}},
		{Dtype: tfpb.DataType_DT_INT64, TensorShape: Shape(1<<40, 1<<40), Int64Val: []int64{1}},
	}
	var out [][]byte
	for _, m := range msgs {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	// Unpacked values, a repeated shape, and a dim name that is not UTF-8.
	var b []byte
	b = protowire.AppendTag(b, fieldDType, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(tfpb.DataType_DT_FLOAT))
	b = protowire.AppendTag(b, fieldFloatVal, protowire.Fixed32Type)
	b = protowire.AppendFixed32(b, 7)
	out = append(out, b)
	shape, _ := proto.Marshal(Shape(2))
	b2 := protowire.AppendTag(nil, fieldShape, protowire.BytesType)
	b2 = protowire.AppendBytes(b2, shape)
	out = append(out, append(b2, b2...))
	dim := protowire.AppendTag(nil, fieldDimName, protowire.BytesType)
	dim = protowire.AppendBytes(dim, []byte{0xff})
	sh := protowire.AppendBytes(protowire.AppendTag(nil, fieldShapeDim, protowire.BytesType), dim)
	out = append(out, protowire.AppendBytes(protowire.AppendTag(nil, fieldShape, protowire.BytesType), sh))
	return out
}

func TestParseHeaderMatchesDecode(t *testing.T) {
	for _, b := range headerSeeds(t) {
		checkParseHeader(t, b)
	}
	// The common forms are read, not declined.
	for _, m := range []*tfpb.TensorProto{
		{Dtype: tfpb.DataType_DT_INT64, TensorShape: Shape(1, 32), Int64Val: make([]int64, 32)},
		{Dtype: tfpb.DataType_DT_FLOAT, TensorShape: Shape(1, 2), TensorContent: make([]byte, 8)},
		{Dtype: tfpb.DataType_DT_STRING, TensorShape: Shape(2), StringVal: [][]byte{[]byte("a"), {0xff}}},
	} {
		b, _ := proto.Marshal(m)
		if _, ok := ParseHeader(b); !ok {
			t.Errorf("ParseHeader declined %v", m)
		}
	}
}

// checkParseHeader: a header ParseHeader reads is what decoding finds, and the
// checks give the same answers.
func checkParseHeader(t *testing.T, b []byte) {
	t.Helper()
	h, ok := ParseHeader(b)
	var tp tfpb.TensorProto
	err := proto.Unmarshal(b, &tp)
	if !ok {
		return
	}
	if err != nil {
		t.Fatalf("ParseHeader read %x, which does not decode: %v", b, err)
	}
	if want := HeaderOf(&tp); h != want {
		t.Fatalf("ParseHeader(%x) = %+v, decoded tensor's header %+v", b, h, want)
	}
	n1, err1 := h.Len()
	n2, err2 := Len(&tp)
	if n1 != n2 || errString(err1) != errString(err2) {
		t.Fatalf("Len from the header = %d, %v; from the decoded tensor %d, %v", n1, err1, n2, err2)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func FuzzParseHeader(f *testing.F) {
	for _, b := range headerSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(checkParseHeader)
}
