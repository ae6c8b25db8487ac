package tensor

import (
	"fmt"
	"math"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	tfpb "github.com/tfgate/tfgate/proto/tensorflow"
)

// Header is what the shape and value-count checks read from a tensor: its dtype,
// its shape, and how many values each value field holds. It is read either from a
// decoded TensorProto ([HeaderOf]) or straight from a TensorProto's wire bytes
// ([ParseHeader]), so that a tensor the gateway only forwards is checked without
// being decoded. The zero value is an empty tensor (DT_INVALID, a scalar).
type Header struct {
	DType       tfpb.DataType
	UnknownRank bool
	// NDims is the number of dimensions; Dims holds the first MaxDims of them.
	NDims int
	Dims  [MaxDims]int64
	// ContentLen is len(tensor_content).
	ContentLen int
	// Values per typed field: float_val, double_val, int_val, int64_val,
	// string_val, bool_val.
	NFloat, NDouble, NInt32, NInt64, NString, NBool int
}

// HeaderOf reads t's header.
func HeaderOf(t *tfpb.TensorProto) Header {
	h := Header{
		DType:       t.GetDtype(),
		UnknownRank: t.GetTensorShape().GetUnknownRank(),
		NDims:       len(t.GetTensorShape().GetDim()),
		ContentLen:  len(t.GetTensorContent()),
		NFloat:      len(t.GetFloatVal()),
		NDouble:     len(t.GetDoubleVal()),
		NInt32:      len(t.GetIntVal()),
		NInt64:      len(t.GetInt64Val()),
		NString:     len(t.GetStringVal()),
		NBool:       len(t.GetBoolVal()),
	}
	for i, d := range t.GetTensorShape().GetDim() {
		if i == MaxDims {
			break
		}
		h.Dims[i] = d.GetSize()
	}
	return h
}

// Rank is [Rank] for a header.
func (h *Header) Rank() (int, error) {
	rank, _, err := h.shape()
	return rank, err
}

// Rows is the size of dimension 0, with Rank's checks; 0 for a scalar.
func (h *Header) Rows() (int64, error) {
	rank, _, err := h.shape()
	if err != nil || rank == 0 {
		return 0, err
	}
	return h.Dims[0], nil
}

// shape checks the shape as [Dims] and [NumElements] do and returns the rank and
// element count.
func (h *Header) shape() (rank int, n int64, err error) {
	if h.UnknownRank {
		return 0, 0, fmt.Errorf("%w: unknown rank in a concrete tensor", ErrShape)
	}
	if h.NDims > MaxDims {
		return 0, 0, fmt.Errorf("%w: %d dimensions, at most %d", ErrShape, h.NDims, MaxDims)
	}
	n = 1
	for i, d := range h.Dims[:h.NDims] {
		if d < 0 {
			return 0, 0, fmt.Errorf("%w: dimension %d has size %d", ErrShape, i, d)
		}
		if d != 0 && n > math.MaxInt64/d {
			_, err := NumElements(h.Dims[:h.NDims]) // its error names the shape
			return 0, 0, err
		}
		n *= d
	}
	return h.NDims, n, nil
}

// Len is [Len] for a header.
func (h *Header) Len() (int, error) {
	_, n, err := h.shape()
	if err != nil {
		return 0, err
	}
	var got int
	switch {
	case h.ContentLen > 0:
		es := ElemSize(h.DType)
		if es == 0 {
			return 0, fmt.Errorf("%w: tensor_content is not supported for %s", ErrDType, h.DType)
		}
		if h.ContentLen%es != 0 {
			return 0, fmt.Errorf("%w: tensor_content has %d bytes, not a multiple of %d", ErrShape, h.ContentLen, es)
		}
		got = h.ContentLen / es
	default:
		switch h.DType {
		case tfpb.DataType_DT_FLOAT:
			got = h.NFloat
		case tfpb.DataType_DT_DOUBLE:
			got = h.NDouble
		case tfpb.DataType_DT_INT32:
			got = h.NInt32
		case tfpb.DataType_DT_INT64:
			got = h.NInt64
		case tfpb.DataType_DT_STRING:
			got = h.NString
		case tfpb.DataType_DT_BOOL:
			got = h.NBool
		default:
			return 0, fmt.Errorf("%w: unsupported dtype %s", ErrDType, h.DType)
		}
	}
	if int64(got) != n {
		return 0, fmt.Errorf("%w: shape %v has %d elements but the tensor holds %d values", ErrShape, h.Dims[:h.NDims], n, got)
	}
	return got, nil
}

// TensorProto, TensorShapeProto and Dim field numbers ParseHeader reads.
const (
	fieldDType         = 1
	fieldShape         = 2
	fieldVersionNumber = 3
	fieldContent       = 4
	fieldFloatVal      = 5
	fieldDoubleVal     = 6
	fieldIntVal        = 7
	fieldStringVal     = 8
	fieldInt64Val      = 10
	fieldBoolVal       = 11

	fieldShapeDim         = 2
	fieldShapeUnknownRank = 3
	fieldDimSize          = 1
	fieldDimName          = 2
)

// ParseHeader reads the header of a TensorProto from its wire bytes without
// decoding its values. It handles what TensorFlow and protobuf encoders write for
// the dtypes this package reads: dtype, tensor_shape (once), version_number,
// tensor_content and the float, double, int, int64, string and bool value fields,
// packed or not. ok is false for anything else -- malformed bytes, other fields,
// unknown fields, a field with an unexpected wire type, a repeated tensor_shape
// or tensor_content (which a decoder would merge or replace) -- and the caller
// then decodes the tensor in full. When ok is true, proto.Unmarshal of b succeeds
// and HeaderOf of the result equals h (FuzzParseHeader checks it).
func ParseHeader(b []byte) (h Header, ok bool) {
	var seenShape, seenContent bool
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return h, false
		}
		b = b[n:]
		switch {
		case num == fieldDType && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return h, false
			}
			h.DType, b = tfpb.DataType(int32(v)), b[n:]
		case num == fieldVersionNumber && typ == protowire.VarintType:
			_, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return h, false
			}
			b = b[n:]
		case num == fieldShape && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || seenShape || !parseShape(v, &h) {
				return h, false
			}
			seenShape, b = true, b[n:]
		case num == fieldContent && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || seenContent {
				return h, false
			}
			seenContent, h.ContentLen, b = true, len(v), b[n:]
		case num == fieldStringVal && typ == protowire.BytesType:
			_, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return h, false
			}
			h.NString++
			b = b[n:]
		default:
			n := h.values(num, typ, b)
			if n < 0 {
				return h, false
			}
			b = b[n:]
		}
	}
	return h, true
}

// values counts the values of one numeric value field whose tag was just read
// from b (unpacked: one value; packed: every value in it) and returns the bytes
// it took, or -1 for a field ParseHeader does not handle.
func (h *Header) values(num protowire.Number, typ protowire.Type, b []byte) int {
	var cnt *int
	var kind protowire.Type // the element's wire type
	switch num {
	case fieldFloatVal:
		cnt, kind = &h.NFloat, protowire.Fixed32Type
	case fieldDoubleVal:
		cnt, kind = &h.NDouble, protowire.Fixed64Type
	case fieldIntVal:
		cnt, kind = &h.NInt32, protowire.VarintType
	case fieldInt64Val:
		cnt, kind = &h.NInt64, protowire.VarintType
	case fieldBoolVal:
		cnt, kind = &h.NBool, protowire.VarintType
	default:
		return -1
	}
	if typ == kind { // one unpacked value
		n := protowire.ConsumeFieldValue(num, typ, b)
		if n >= 0 {
			*cnt++
		}
		return n
	}
	if typ != protowire.BytesType {
		return -1
	}
	v, n := protowire.ConsumeBytes(b)
	if n < 0 {
		return -1
	}
	switch kind {
	case protowire.Fixed32Type:
		if len(v)%4 != 0 {
			return -1
		}
		*cnt += len(v) / 4
	case protowire.Fixed64Type:
		if len(v)%8 != 0 {
			return -1
		}
		*cnt += len(v) / 8
	default:
		for len(v) > 0 {
			_, m := protowire.ConsumeVarint(v)
			if m < 0 {
				return -1
			}
			*cnt++
			v = v[m:]
		}
	}
	return n
}

func parseShape(b []byte, h *Header) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch {
		case num == fieldShapeDim && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return false
			}
			size, ok := parseDim(v)
			if !ok {
				return false
			}
			if h.NDims < MaxDims {
				h.Dims[h.NDims] = size
			}
			h.NDims++
			b = b[n:]
		case num == fieldShapeUnknownRank && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false
			}
			h.UnknownRank, b = v != 0, b[n:]
		default:
			return false
		}
	}
	return true
}

func parseDim(b []byte) (size int64, ok bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, false
		}
		b = b[n:]
		switch {
		case num == fieldDimSize && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return 0, false
			}
			size, b = int64(v), b[n:]
		case num == fieldDimName && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || !utf8.Valid(v) { // a proto3 string: decoding would fail
				return 0, false
			}
			b = b[n:]
		default:
			return 0, false
		}
	}
	return size, true
}
