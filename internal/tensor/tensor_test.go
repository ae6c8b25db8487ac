package tensor

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"

	tfpb "github.com/tfgate/tfgate/proto/tensorflow"
)

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name  string
		build func() (*tfpb.TensorProto, error)
		read  func(*tfpb.TensorProto) (any, error)
		want  any
	}{
		{"float32", func() (*tfpb.TensorProto, error) {
			return FromFloat32([]float32{1, -2.5, float32(math.Inf(1)), 0}, 2, 2)
		},
			func(t *tfpb.TensorProto) (any, error) { return Float32s(t) }, []float32{1, -2.5, float32(math.Inf(1)), 0}},
		{"float64", func() (*tfpb.TensorProto, error) { return FromFloat64([]float64{1e300, -1e-300, 3}, 3) },
			func(t *tfpb.TensorProto) (any, error) { return Float64s(t) }, []float64{1e300, -1e-300, 3}},
		{"int32", func() (*tfpb.TensorProto, error) { return FromInt32([]int32{math.MinInt32, 0, math.MaxInt32}, 1, 3) },
			func(t *tfpb.TensorProto) (any, error) { return Int32s(t) }, []int32{math.MinInt32, 0, math.MaxInt32}},
		{"int64", func() (*tfpb.TensorProto, error) { return FromInt64([]int64{math.MinInt64, 7, math.MaxInt64}, 3, 1) },
			func(t *tfpb.TensorProto) (any, error) { return Int64s(t) }, []int64{math.MinInt64, 7, math.MaxInt64}},
		{"bool", func() (*tfpb.TensorProto, error) { return FromBool([]bool{true, false, true}, 3) },
			func(t *tfpb.TensorProto) (any, error) { return Bools(t) }, []bool{true, false, true}},
		{"scalar", func() (*tfpb.TensorProto, error) { return FromInt64([]int64{42}) },
			func(t *tfpb.TensorProto) (any, error) { return Int64s(t) }, []int64{42}},
		{"empty batch", func() (*tfpb.TensorProto, error) { return FromFloat32(nil, 0, 4) },
			func(t *tfpb.TensorProto) (any, error) { return Float32s(t) }, []float32(nil)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tp, err := tc.build()
			if err != nil {
				t.Fatalf("build: %v", err)
			}
			// Through the wire, typed form.
			b, err := proto.Marshal(tp)
			if err != nil {
				t.Fatal(err)
			}
			var wire tfpb.TensorProto
			if err := proto.Unmarshal(b, &wire); err != nil {
				t.Fatal(err)
			}
			got, err := tc.read(&wire)
			if err != nil {
				t.Fatalf("read typed: %v", err)
			}
			if !equalValues(got, tc.want) {
				t.Errorf("typed: got %v, want %v", got, tc.want)
			}
			// tensor_content form.
			c, err := Content(&wire)
			if err != nil {
				t.Fatalf("Content: %v", err)
			}
			got, err = tc.read(c)
			if err != nil {
				t.Fatalf("read content: %v", err)
			}
			if !equalValues(got, tc.want) {
				t.Errorf("content: got %v, want %v", got, tc.want)
			}
		})
	}
}

func equalValues(a, b any) bool {
	ra, rb := reflect.ValueOf(a), reflect.ValueOf(b)
	if ra.Len() == 0 && rb.Len() == 0 {
		return true
	}
	return reflect.DeepEqual(a, b)
}

func TestStrings(t *testing.T) {
	tp, err := FromStrings([]string{"a", "", "héllo"}, 3)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Strings(tp)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || string(got[2]) != "héllo" {
		t.Errorf("Strings = %q", got)
	}
	if _, err := Content(tp); !errors.Is(err, ErrDType) {
		t.Errorf("Content(string) err = %v, want ErrDType", err)
	}
}

func TestLittleEndianContent(t *testing.T) {
	// 1.0f is 0x3f800000; little-endian bytes 00 00 80 3f.
	tp := &tfpb.TensorProto{Dtype: tfpb.DataType_DT_FLOAT, TensorShape: Shape(2),
		TensorContent: []byte{0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0}}
	got, err := Float32s(tp)
	if err != nil {
		t.Fatal(err)
	}
	if want := []float32{1, -2}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name string
		t    *tfpb.TensorProto
		read func(*tfpb.TensorProto) error
		want error
	}{
		{"too few values", &tfpb.TensorProto{Dtype: tfpb.DataType_DT_FLOAT, TensorShape: Shape(3), FloatVal: []float32{1, 2}},
			func(t *tfpb.TensorProto) error { _, err := Float32s(t); return err }, ErrShape},
		{"too many values", &tfpb.TensorProto{Dtype: tfpb.DataType_DT_INT64, TensorShape: Shape(1), Int64Val: []int64{1, 2}},
			func(t *tfpb.TensorProto) error { _, err := Int64s(t); return err }, ErrShape},
		{"content not multiple", &tfpb.TensorProto{Dtype: tfpb.DataType_DT_INT32, TensorShape: Shape(1), TensorContent: []byte{1, 2, 3}},
			func(t *tfpb.TensorProto) error { _, err := Int32s(t); return err }, ErrShape},
		{"content wrong count", &tfpb.TensorProto{Dtype: tfpb.DataType_DT_DOUBLE, TensorShape: Shape(2), TensorContent: make([]byte, 8)},
			func(t *tfpb.TensorProto) error { _, err := Float64s(t); return err }, ErrShape},
		{"negative dim", &tfpb.TensorProto{Dtype: tfpb.DataType_DT_FLOAT, TensorShape: Shape(-1)},
			func(t *tfpb.TensorProto) error { _, err := Float32s(t); return err }, ErrShape},
		{"overflow", &tfpb.TensorProto{Dtype: tfpb.DataType_DT_FLOAT, TensorShape: Shape(math.MaxInt64, 4)},
			func(t *tfpb.TensorProto) error { _, err := Float32s(t); return err }, ErrShape},
		{"unknown rank", &tfpb.TensorProto{Dtype: tfpb.DataType_DT_FLOAT, TensorShape: &tfpb.TensorShapeProto{UnknownRank: true}},
			func(t *tfpb.TensorProto) error { _, err := Float32s(t); return err }, ErrShape},
		{"wrong dtype", &tfpb.TensorProto{Dtype: tfpb.DataType_DT_INT32, TensorShape: Shape(1), IntVal: []int32{1}},
			func(t *tfpb.TensorProto) error { _, err := Float32s(t); return err }, ErrDType},
		{"string content", &tfpb.TensorProto{Dtype: tfpb.DataType_DT_STRING, TensorShape: Shape(1), TensorContent: []byte("x")},
			func(t *tfpb.TensorProto) error { _, err := Strings(t); return err }, ErrDType},
		{"unsupported dtype", &tfpb.TensorProto{Dtype: tfpb.DataType_DT_HALF, TensorShape: Shape(1)},
			func(t *tfpb.TensorProto) error { _, err := Len(t); return err }, ErrDType},
		{"not numeric", &tfpb.TensorProto{Dtype: tfpb.DataType_DT_STRING, TensorShape: Shape(1), StringVal: [][]byte{nil}},
			func(t *tfpb.TensorProto) error { _, err := AsFloat64s(t); return err }, ErrDType},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.read(tc.t); !errors.Is(err, tc.want) {
				t.Errorf("read(%v) err = %v, want %v", tc.t, err, tc.want)
			}
		})
	}
	if _, err := FromFloat32([]float32{1, 2, 3}, 2, 2); !errors.Is(err, ErrShape) {
		t.Errorf("FromFloat32 mismatch err = %v, want ErrShape", err)
	}
}

func TestAsFloat64s(t *testing.T) {
	for _, tp := range []*tfpb.TensorProto{
		must(FromInt32([]int32{1, 2}, 2)), must(FromInt64([]int64{1, 2}, 2)),
		must(FromFloat32([]float32{1, 2}, 2)), must(FromFloat64([]float64{1, 2}, 2)),
	} {
		got, err := AsFloat64s(tp)
		if err != nil || !reflect.DeepEqual(got, []float64{1, 2}) {
			t.Errorf("AsFloat64s(%s) = %v, %v", tp.GetDtype(), got, err)
		}
	}
}

func must(t *tfpb.TensorProto, err error) *tfpb.TensorProto {
	if err != nil {
		panic(err)
	}
	return t
}

// FuzzRead decodes arbitrary bytes as a TensorProto and reads it with every reader:
// no input may panic, and a successful read returns exactly the shape's element count.
func FuzzRead(f *testing.F) {
	for _, tp := range []*tfpb.TensorProto{
		must(FromFloat32([]float32{1, 2, 3, 4}, 2, 2)),
		must(Content(must(FromInt64([]int64{1, 2}, 2)))),
		must(FromStrings([]string{"a", "b"}, 1, 2)),
		must(FromBool([]bool{true}, 1)),
		{Dtype: tfpb.DataType_DT_INT32, TensorShape: Shape(1 << 40), IntVal: []int32{1}},
	} {
		b, _ := proto.Marshal(tp)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var tp tfpb.TensorProto
		if proto.Unmarshal(b, &tp) != nil {
			return
		}
		n, lenErr := Len(&tp)
		check := func(name string, got int, err error) {
			if err == nil && (lenErr != nil || got != n) {
				t.Fatalf("%s read %d values; Len = %d, %v", name, got, n, lenErr)
			}
		}
		v1, err := Float32s(&tp)
		check("Float32s", len(v1), err)
		v2, err := Float64s(&tp)
		check("Float64s", len(v2), err)
		v3, err := Int32s(&tp)
		check("Int32s", len(v3), err)
		v4, err := Int64s(&tp)
		check("Int64s", len(v4), err)
		v5, err := Bools(&tp)
		check("Bools", len(v5), err)
		v6, err := Strings(&tp)
		check("Strings", len(v6), err)
		v7, err := AsFloat64s(&tp)
		check("AsFloat64s", len(v7), err)
		if c, err := Content(&tp); err == nil {
			if m, err := Len(c); err != nil || m != n {
				t.Fatalf("Content changed length: %d vs %d (%v)", m, n, err)
			}
		}
	})
}

func TestRankChecksLikeDims(t *testing.T) {
	for _, tc := range []struct {
		name string
		t    *tfpb.TensorProto
	}{
		{"scalar", &tfpb.TensorProto{}},
		{"matrix", &tfpb.TensorProto{TensorShape: Shape(2, 3)}},
		{"negative", &tfpb.TensorProto{TensorShape: Shape(2, -1)}},
		{"unknown rank", &tfpb.TensorProto{TensorShape: &tfpb.TensorShapeProto{UnknownRank: true}}},
		{"too many", &tfpb.TensorProto{TensorShape: Shape(make([]int64, MaxDims+1)...)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dims, derr := Dims(tc.t)
			rank, rerr := Rank(tc.t)
			if fmt.Sprint(derr) != fmt.Sprint(rerr) || (derr == nil && rank != len(dims)) {
				t.Errorf("Rank = %d, %v; Dims = %v, %v", rank, rerr, dims, derr)
			}
		})
	}
}
