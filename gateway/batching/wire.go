package batching

import (
	"encoding/binary"
	"fmt"
	"slices"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/tfgate/tfgate/internal/tensor"
	tfpb "github.com/tfgate/tfgate/proto/tensorflow"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

// The wire path: a request whose inputs arrive still encoded (the gateway's raw
// path keeps them as the records of the inputs map, in the request's unknown
// fields) is batched without decoding its tensors: the batched request's tensors
// are written straight from the members' value bytes, and a response whose
// outputs are kept encoded the same way is split by row offsets into records for
// each member. Only tensors in the plain form -- dtype, shape, and either
// tensor_content or one packed value field of the dtype -- take this path;
// anything else is decoded and goes the way of a decoded request, so that every
// decision and error is what the decoded path makes of it. The result is the same
// message (proto.Equal after decoding) the decoded path builds:
// TestWireMatchesDecoded checks it over random inputs.

// Field numbers on the wire.
const (
	fieldReqInputs   protowire.Number = 2 // tensorflow.serving.PredictRequest.inputs
	fieldRespOutputs protowire.Number = 1 // tensorflow.serving.PredictResponse.outputs

	tfDType     protowire.Number = 1
	tfShape     protowire.Number = 2
	tfVersion   protowire.Number = 3
	tfContent   protowire.Number = 4
	tfFloatVal  protowire.Number = 5
	tfDoubleVal protowire.Number = 6
	tfIntVal    protowire.Number = 7
	tfInt64Val  protowire.Number = 10
	tfBoolVal   protowire.Number = 11
)

// flat is a tensor in the plain form, read from its wire bytes.
type flat struct {
	dtype  tfpb.DataType
	ndims  int
	dimBuf [tensor.MaxDims]int64 // the shape; dims() is its first ndims
	vals   []byte                // tensor_content, or the packed payload of field
	field  protowire.Number      // tfContent or the packed value field
	nbytes int                   // the tensor's encoded size
}

func (f *flat) dims() []int64 { return f.dimBuf[:f.ndims:f.ndims] }

// valueField is the packed field of a dtype's values (0: none this path takes).
func valueField(dt tfpb.DataType) protowire.Number {
	switch dt {
	case tfpb.DataType_DT_FLOAT:
		return tfFloatVal
	case tfpb.DataType_DT_DOUBLE:
		return tfDoubleVal
	case tfpb.DataType_DT_INT32:
		return tfIntVal
	case tfpb.DataType_DT_INT64:
		return tfInt64Val
	case tfpb.DataType_DT_BOOL:
		return tfBoolVal
	}
	return 0
}

// parseFlat reads a TensorProto in the plain form; ok is false for any other
// form, and for a tensor whose shape and values disagree (the decoded path then
// gives the error).
func parseFlat(b []byte) (f flat, ok bool) {
	hdr, ok := tensor.ParseHeader(b)
	if !ok || hdr.NDims == 0 || hdr.NDims > tensor.MaxDims {
		return f, false
	}
	n, err := hdr.Len()
	if err != nil {
		return f, false
	}
	f.dtype, f.nbytes = hdr.DType, len(b)
	vf := valueField(f.dtype)
	if vf == 0 {
		return f, false
	}
	var seenVals bool
	for off := 0; off < len(b); {
		num, typ, t := protowire.ConsumeTag(b[off:])
		v := protowire.ConsumeFieldValue(num, typ, b[off+t:])
		if t < 0 || v < 0 {
			return f, false
		}
		switch num {
		case tfDType, tfShape, tfVersion: // read by ParseHeader
		case tfContent, vf:
			if seenVals || typ != protowire.BytesType {
				return f, false // two value sources, or unpacked values
			}
			f.vals, _ = protowire.ConsumeBytes(b[off+t:])
			f.field, seenVals = num, true
		default:
			return f, false
		}
		off += t + v
	}
	if !seenVals {
		if n != 0 {
			return f, false
		}
		f.field = tfContent
	}
	if f.field == tfContent && len(f.vals) == 0 && n != 0 {
		return f, false // an empty tensor_content: the values are elsewhere
	}
	f.ndims, f.dimBuf = hdr.NDims, hdr.Dims
	return f, true
}

// wireInput is one input of a wire task.
type wireInput struct {
	name string
	flat
}

// prepareWire reads req's kept inputs for the wire path: every input in the
// plain form, none a scalar, batching without ragged padding. ok is false when
// the decoded path must decide.
func (b *Batcher) prepareWire(req *servingpb.PredictRequest) (ins []wireInput, ok bool) {
	if b.cfg.PadVariableLengthInputs || len(req.GetInputs()) > 0 {
		return nil, false
	}
	recs := tensor.KeptRecords(req.ProtoReflect(), fieldReqInputs)
	if recs == nil {
		return nil, false
	}
	n := 0
	for off := 0; off < len(recs); n++ { // count the records
		_, _, t := protowire.ConsumeTag(recs[off:])
		if t < 0 {
			return nil, false
		}
		m := protowire.ConsumeFieldValue(fieldReqInputs, protowire.BytesType, recs[off+t:])
		if m < 0 {
			return nil, false
		}
		off += t + m
	}
	ins = make([]wireInput, 0, n)
	for off := 0; off < len(recs); {
		num, typ, t := protowire.ConsumeTag(recs[off:])
		if t < 0 || num != fieldReqInputs || typ != protowire.BytesType {
			return nil, false
		}
		entry, n := protowire.ConsumeBytes(recs[off+t:])
		if n < 0 {
			return nil, false
		}
		key, val, ok := parseEntry(entry)
		if !ok {
			return nil, false
		}
		f, ok := parseFlat(val)
		if !ok {
			return nil, false
		}
		for _, in := range ins {
			if in.name == string(key) {
				return nil, false
			}
		}
		ins = append(ins, wireInput{name: string(key), flat: f})
		off += t + n
	}
	slices.SortFunc(ins, func(a, b wireInput) int {
		switch {
		case a.name < b.name:
			return -1
		case a.name > b.name:
			return 1
		}
		return 0
	})
	return ins, len(ins) > 0
}

// parseEntry reads one map<string, TensorProto> entry: one key (valid UTF-8),
// one value.
func parseEntry(b []byte) (key, val []byte, ok bool) {
	var haveKey, haveVal bool
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.BytesType {
			return nil, nil, false
		}
		v, m := protowire.ConsumeBytes(b[n:])
		if m < 0 {
			return nil, nil, false
		}
		switch {
		case num == 1 && !haveKey:
			if !utf8.Valid(v) {
				return nil, nil, false // the decoder's error, on the decoded path
			}
			key, haveKey = v, true
		case num == 2 && !haveVal:
			val, haveVal = v, true
		default:
			return nil, nil, false
		}
		b = b[n+m:]
	}
	return key, val, haveKey && haveVal
}

// elemSize is the size of one element in tensor_content.
func elemSize(dt tfpb.DataType) int { return tensor.ElemSize(dt) }

// appendContent appends f's values as little-endian tensor_content.
func appendContent(dst []byte, f *flat) []byte {
	if f.field == tfContent {
		return append(dst, f.vals...)
	}
	switch f.field {
	case tfFloatVal, tfDoubleVal: // packed fixed32/64: already little-endian
		return append(dst, f.vals...)
	}
	for b := f.vals; len(b) > 0; {
		v, n := protowire.ConsumeVarint(b)
		b = b[n:]
		switch f.field {
		case tfIntVal:
			dst = binary.LittleEndian.AppendUint32(dst, uint32(int32(v)))
		case tfInt64Val:
			dst = binary.LittleEndian.AppendUint64(dst, v)
		case tfBoolVal:
			if v != 0 {
				dst = append(dst, 1)
			} else {
				dst = append(dst, 0)
			}
		}
	}
	return dst
}

// appendTensor appends the encoding of a tensor of dtype and dims with the given
// values field, as proto.Marshal writes the decoded path's tensors.
func appendTensor(dst []byte, dt tfpb.DataType, dims []int64, field protowire.Number, vals []byte) []byte {
	if dt != 0 {
		dst = protowire.AppendTag(dst, tfDType, protowire.VarintType)
		dst = protowire.AppendVarint(dst, uint64(dt))
	}
	shape := 0
	for _, d := range dims {
		shape += 1 + protowire.SizeBytes(dimSize(d))
	}
	dst = protowire.AppendTag(dst, tfShape, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(shape))
	for _, d := range dims {
		dst = protowire.AppendTag(dst, 2, protowire.BytesType) // dim
		dst = protowire.AppendVarint(dst, uint64(dimSize(d)))
		if d != 0 {
			dst = protowire.AppendTag(dst, 1, protowire.VarintType) // size
			dst = protowire.AppendVarint(dst, uint64(d))
		}
	}
	if len(vals) > 0 {
		dst = protowire.AppendTag(dst, field, protowire.BytesType)
		dst = protowire.AppendBytes(dst, vals)
	}
	return dst
}

func dimSize(d int64) int {
	if d == 0 {
		return 0
	}
	return 1 + protowire.SizeVarint(uint64(d))
}

// appendEntry appends one record of map field num: key and an encoded tensor.
func appendEntry(dst []byte, num protowire.Number, key string, tensorBytes []byte) []byte {
	dst = protowire.AppendTag(dst, num, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(1+protowire.SizeBytes(len(key))+1+protowire.SizeBytes(len(tensorBytes))))
	dst = protowire.AppendTag(dst, 1, protowire.BytesType)
	dst = protowire.AppendString(dst, key)
	dst = protowire.AppendTag(dst, 2, protowire.BytesType)
	return protowire.AppendBytes(dst, tensorBytes)
}

// assembleWire is assemble for a batch whose members are all wire tasks: each
// input's values concatenated as tensor_content (as tensor.Concat writes it),
// rows padded with copies of the first row, written as the batched request's
// inputs records.
func (b *Batcher) assembleWire(bt *batch, padTo int64) *servingpb.PredictRequest {
	first := bt.tasks[0]
	var recs, tb, content []byte
	for i, in := range first.wire {
		rows := max(bt.rows, padTo)
		dims := append([]int64{rows}, in.dims()[1:]...)
		rowElems := int64(1)
		for _, d := range in.dims()[1:] {
			rowElems *= d
		}
		rb := int(rowElems) * elemSize(in.dtype)
		content = slices.Grow(content[:0], int(rows)*rb)
		for _, t := range bt.tasks {
			content = appendContent(content, &t.wire[i].flat)
		}
		for r := bt.rows; r < rows; r++ {
			content = append(content, content[:rb]...)
		}
		tb = appendTensor(tb[:0], in.dtype, dims, tfContent, content)
		recs = appendEntry(recs, fieldReqInputs, in.name, tb)
	}
	req := &servingpb.PredictRequest{
		ModelSpec:    first.req.GetModelSpec(),
		OutputFilter: first.req.GetOutputFilter(),
	}
	req.ProtoReflect().SetUnknown(protoreflect.RawFields(recs))
	return req
}

// splitWire is split for a response whose outputs are kept records: each
// member's rows of every output, cut by offset from the values as the backend
// encoded them (as tensor.Slice keeps the form), written as records of the
// member's response. ok is false when an output is not in the plain form; err is
// split's for outputs that do not follow the batch rows.
func splitWire(resp *servingpb.PredictResponse, recs []byte, rows []int64, sent int64) (_ []*servingpb.PredictResponse, ok bool, err error) {
	type output struct {
		key []byte
		flat
	}
	var outs []output
	for off := 0; off < len(recs); {
		num, typ, t := protowire.ConsumeTag(recs[off:])
		if t < 0 || num != fieldRespOutputs || typ != protowire.BytesType {
			return nil, false, nil
		}
		entry, n := protowire.ConsumeBytes(recs[off+t:])
		if n < 0 {
			return nil, false, nil
		}
		key, val, ok := parseEntry(entry)
		if !ok {
			return nil, false, nil
		}
		f, ok := parseFlat(val)
		if !ok {
			return nil, false, nil
		}
		for _, o := range outs {
			if string(o.key) == string(key) {
				return nil, false, nil
			}
		}
		outs = append(outs, output{key, f})
		off += t + n
	}
	for _, o := range outs {
		if o.dimBuf[0] != sent {
			return nil, true, fmt.Errorf("output %q has %d rows in dimension 0 for a batch of %d", o.key, o.dimBuf[0], sent)
		}
	}
	parts := make([][]byte, len(rows))
	for i, n := range rows { // each member's share of the bytes, and headers
		parts[i] = make([]byte, 0, int(int64(len(recs))*n/max(sent, 1))+32*len(outs))
	}
	var tb []byte
	for _, o := range outs {
		rowElems := 1
		for _, d := range o.dims()[1:] {
			rowElems *= int(d)
		}
		dims := slices.Clone(o.dims())
		vals := o.vals
		for i, n := range rows {
			k := int(n) * rowElems
			var piece []byte
			piece, vals = cut(&o.flat, vals, k)
			dims[0] = n
			tb = appendTensor(tb[:0], o.dtype, dims, o.field, piece)
			parts[i] = appendEntry(parts[i], fieldRespOutputs, string(o.key), tb)
		}
	}
	out := make([]*servingpb.PredictResponse, len(rows))
	for i := range out {
		out[i] = &servingpb.PredictResponse{ModelSpec: proto.CloneOf(resp.GetModelSpec())}
		if len(parts[i]) > 0 {
			out[i].ProtoReflect().SetUnknown(protoreflect.RawFields(parts[i]))
		}
	}
	return out, true, nil
}

// cut splits the first k elements off vals (in f's encoding).
func cut(f *flat, vals []byte, k int) (piece, rest []byte) {
	var n int
	switch f.field {
	case tfContent:
		n = k * elemSize(f.dtype)
	case tfFloatVal:
		n = 4 * k
	case tfDoubleVal:
		n = 8 * k
	default: // varints
		for range k {
			_, m := protowire.ConsumeVarint(vals[n:])
			n += m
		}
	}
	return vals[:n], vals[n:]
}
