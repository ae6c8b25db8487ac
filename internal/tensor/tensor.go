package tensor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	tfpb "github.com/tfgate/tfgate/proto/tensorflow"
)

var (
	// ErrShape reports a shape that does not match the tensor's values.
	ErrShape = errors.New("tensor shape mismatch")
	// ErrDType reports a tensor of a different dtype than the reader expects.
	ErrDType = errors.New("tensor dtype mismatch")
)

// MaxDims bounds the rank of a tensor shape.
const MaxDims = 32

// Shape returns a TensorShapeProto with the given dimensions (-1 for unknown).
func Shape(dims ...int64) *tfpb.TensorShapeProto {
	s := &tfpb.TensorShapeProto{Dim: make([]*tfpb.TensorShapeProto_Dim, len(dims))}
	for i, d := range dims {
		s.Dim[i] = &tfpb.TensorShapeProto_Dim{Size: d}
	}
	return s
}

// Dims returns a tensor's dimensions, rejecting unknown rank, unknown (negative)
// sizes and more than MaxDims dimensions. A nil shape is a scalar.
func Dims(t *tfpb.TensorProto) ([]int64, error) {
	sh := t.GetTensorShape()
	if sh.GetUnknownRank() {
		return nil, fmt.Errorf("%w: unknown rank in a concrete tensor", ErrShape)
	}
	if len(sh.GetDim()) > MaxDims {
		return nil, fmt.Errorf("%w: %d dimensions, at most %d", ErrShape, len(sh.GetDim()), MaxDims)
	}
	dims := make([]int64, len(sh.GetDim()))
	for i, d := range sh.GetDim() {
		if d.GetSize() < 0 {
			return nil, fmt.Errorf("%w: dimension %d has size %d", ErrShape, i, d.GetSize())
		}
		dims[i] = d.GetSize()
	}
	return dims, nil
}

// Rank is len(Dims(t)) with Dims's checks, without allocating.
func Rank(t *tfpb.TensorProto) (int, error) {
	h := HeaderOf(t)
	return h.Rank()
}

// NumElements multiplies dims, failing on negative sizes or int64 overflow.
func NumElements(dims []int64) (int64, error) {
	n := int64(1)
	for i, d := range dims {
		if d < 0 {
			return 0, fmt.Errorf("%w: dimension %d has size %d", ErrShape, i, d)
		}
		if d != 0 && n > math.MaxInt64/d {
			return 0, fmt.Errorf("%w: shape %v overflows", ErrShape, dims)
		}
		n *= d
	}
	return n, nil
}

// ElemSize is the byte size of one element of dt in tensor_content, 0 when dt has
// no fixed-size encoding there (strings) or is not supported by this package.
func ElemSize(dt tfpb.DataType) int {
	switch dt {
	case tfpb.DataType_DT_FLOAT, tfpb.DataType_DT_INT32:
		return 4
	case tfpb.DataType_DT_DOUBLE, tfpb.DataType_DT_INT64:
		return 8
	case tfpb.DataType_DT_BOOL:
		return 1
	}
	return 0
}

// Len returns the number of values a tensor holds (the product of its shape), after
// checking the shape against its values. It works for every dtype this package reads.
func Len(t *tfpb.TensorProto) (int, error) {
	h := HeaderOf(t)
	return h.Len()
}

func checkDType(t *tfpb.TensorProto, want tfpb.DataType) error {
	if t.GetDtype() != want {
		return fmt.Errorf("%w: got %s, want %s", ErrDType, t.GetDtype(), want)
	}
	return nil
}

// content decodes tensor_content with dec, one element of size es at a time.
func content[T any](b []byte, es int, dec func([]byte) T) []T {
	out := make([]T, len(b)/es)
	for i := range out {
		out[i] = dec(b[i*es:])
	}
	return out
}

func read[T any](t *tfpb.TensorProto, dt tfpb.DataType, typed []T, dec func([]byte) T) ([]T, error) {
	if err := checkDType(t, dt); err != nil {
		return nil, err
	}
	if _, err := Len(t); err != nil {
		return nil, err
	}
	if c := t.GetTensorContent(); len(c) > 0 {
		return content(c, ElemSize(dt), dec), nil
	}
	return typed, nil
}

// Float32s reads a DT_FLOAT tensor. The result may alias t's storage: do not modify it.
func Float32s(t *tfpb.TensorProto) ([]float32, error) {
	return read(t, tfpb.DataType_DT_FLOAT, t.GetFloatVal(), func(b []byte) float32 {
		return math.Float32frombits(binary.LittleEndian.Uint32(b))
	})
}

// Float64s reads a DT_DOUBLE tensor. The result may alias t's storage.
func Float64s(t *tfpb.TensorProto) ([]float64, error) {
	return read(t, tfpb.DataType_DT_DOUBLE, t.GetDoubleVal(), func(b []byte) float64 {
		return math.Float64frombits(binary.LittleEndian.Uint64(b))
	})
}

// Int32s reads a DT_INT32 tensor. The result may alias t's storage.
func Int32s(t *tfpb.TensorProto) ([]int32, error) {
	return read(t, tfpb.DataType_DT_INT32, t.GetIntVal(), func(b []byte) int32 {
		return int32(binary.LittleEndian.Uint32(b))
	})
}

// Int64s reads a DT_INT64 tensor. The result may alias t's storage.
func Int64s(t *tfpb.TensorProto) ([]int64, error) {
	return read(t, tfpb.DataType_DT_INT64, t.GetInt64Val(), func(b []byte) int64 {
		return int64(binary.LittleEndian.Uint64(b))
	})
}

// Bools reads a DT_BOOL tensor. The result may alias t's storage.
func Bools(t *tfpb.TensorProto) ([]bool, error) {
	return read(t, tfpb.DataType_DT_BOOL, t.GetBoolVal(), func(b []byte) bool { return b[0] != 0 })
}

// Strings reads a DT_STRING tensor. The result aliases t's storage.
func Strings(t *tfpb.TensorProto) ([][]byte, error) {
	if err := checkDType(t, tfpb.DataType_DT_STRING); err != nil {
		return nil, err
	}
	if _, err := Len(t); err != nil {
		return nil, err
	}
	return t.GetStringVal(), nil
}

// AsFloat64s reads any numeric or bool tensor as float64 values, converting.
func AsFloat64s(t *tfpb.TensorProto) ([]float64, error) {
	conv := func(n int, at func(int) float64) []float64 {
		out := make([]float64, n)
		for i := range out {
			out[i] = at(i)
		}
		return out
	}
	switch t.GetDtype() {
	case tfpb.DataType_DT_FLOAT:
		v, err := Float32s(t)
		return conv(len(v), func(i int) float64 { return float64(v[i]) }), err
	case tfpb.DataType_DT_DOUBLE:
		return Float64s(t)
	case tfpb.DataType_DT_INT32:
		v, err := Int32s(t)
		return conv(len(v), func(i int) float64 { return float64(v[i]) }), err
	case tfpb.DataType_DT_INT64:
		v, err := Int64s(t)
		return conv(len(v), func(i int) float64 { return float64(v[i]) }), err
	case tfpb.DataType_DT_BOOL:
		v, err := Bools(t)
		return conv(len(v), func(i int) float64 {
			if v[i] {
				return 1
			}
			return 0
		}), err
	}
	return nil, fmt.Errorf("%w: %s is not numeric", ErrDType, t.GetDtype())
}

func build(dt tfpb.DataType, n int, dims []int64) (*tfpb.TensorProto, error) {
	want, err := NumElements(dims)
	if err != nil {
		return nil, err
	}
	if want != int64(n) {
		return nil, fmt.Errorf("%w: shape %v has %d elements, got %d values", ErrShape, dims, want, n)
	}
	return &tfpb.TensorProto{Dtype: dt, TensorShape: Shape(dims...)}, nil
}

// FromFloat32 builds a DT_FLOAT tensor of the given shape (float_val). v is not copied.
func FromFloat32(v []float32, dims ...int64) (*tfpb.TensorProto, error) {
	t, err := build(tfpb.DataType_DT_FLOAT, len(v), dims)
	if err == nil {
		t.FloatVal = v
	}
	return t, err
}

// FromFloat64 builds a DT_DOUBLE tensor of the given shape. v is not copied.
func FromFloat64(v []float64, dims ...int64) (*tfpb.TensorProto, error) {
	t, err := build(tfpb.DataType_DT_DOUBLE, len(v), dims)
	if err == nil {
		t.DoubleVal = v
	}
	return t, err
}

// FromInt32 builds a DT_INT32 tensor of the given shape. v is not copied.
func FromInt32(v []int32, dims ...int64) (*tfpb.TensorProto, error) {
	t, err := build(tfpb.DataType_DT_INT32, len(v), dims)
	if err == nil {
		t.IntVal = v
	}
	return t, err
}

// FromInt64 builds a DT_INT64 tensor of the given shape. v is not copied.
func FromInt64(v []int64, dims ...int64) (*tfpb.TensorProto, error) {
	t, err := build(tfpb.DataType_DT_INT64, len(v), dims)
	if err == nil {
		t.Int64Val = v
	}
	return t, err
}

// FromBool builds a DT_BOOL tensor of the given shape. v is not copied.
func FromBool(v []bool, dims ...int64) (*tfpb.TensorProto, error) {
	t, err := build(tfpb.DataType_DT_BOOL, len(v), dims)
	if err == nil {
		t.BoolVal = v
	}
	return t, err
}

// FromBytes builds a DT_STRING tensor of the given shape. v is not copied.
func FromBytes(v [][]byte, dims ...int64) (*tfpb.TensorProto, error) {
	t, err := build(tfpb.DataType_DT_STRING, len(v), dims)
	if err == nil {
		t.StringVal = v
	}
	return t, err
}

// FromStrings builds a DT_STRING tensor of the given shape from Go strings.
func FromStrings(v []string, dims ...int64) (*tfpb.TensorProto, error) {
	b := make([][]byte, len(v))
	for i, s := range v {
		b[i] = []byte(s)
	}
	return FromBytes(b, dims...)
}

// Content re-encodes a numeric or bool tensor into little-endian tensor_content,
// the compact form TF clients use for large tensors.
func Content(t *tfpb.TensorProto) (*tfpb.TensorProto, error) {
	n, err := Len(t)
	if err != nil {
		return nil, err
	}
	es := ElemSize(t.GetDtype())
	if es == 0 {
		return nil, fmt.Errorf("%w: %s has no tensor_content form", ErrDType, t.GetDtype())
	}
	out := &tfpb.TensorProto{Dtype: t.GetDtype(), TensorShape: t.GetTensorShape()}
	if len(t.GetTensorContent()) > 0 {
		out.TensorContent = t.GetTensorContent()
		return out, nil
	}
	b := make([]byte, 0, n*es)
	switch t.GetDtype() {
	case tfpb.DataType_DT_FLOAT:
		for _, v := range t.GetFloatVal() {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		}
	case tfpb.DataType_DT_DOUBLE:
		for _, v := range t.GetDoubleVal() {
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
		}
	case tfpb.DataType_DT_INT32:
		for _, v := range t.GetIntVal() {
			b = binary.LittleEndian.AppendUint32(b, uint32(v))
		}
	case tfpb.DataType_DT_INT64:
		for _, v := range t.GetInt64Val() {
			b = binary.LittleEndian.AppendUint64(b, uint64(v))
		}
	case tfpb.DataType_DT_BOOL:
		for _, v := range t.GetBoolVal() {
			if v {
				b = append(b, 1)
			} else {
				b = append(b, 0)
			}
		}
	}
	out.TensorContent = b
	return out, nil
}
