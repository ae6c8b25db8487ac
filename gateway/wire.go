package gateway

import (
	"bytes"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/tfgate/tfgate/internal/tensor"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

// The raw path's pass-through: raw_inputs tensors go to the backend as the bytes
// the caller sent, and the backend's output tensors go back to the caller as the
// bytes the backend sent, without being decoded and encoded again on the way.
//
// Every tensor map involved is a map<string, tensorflow.TensorProto>, and a map
// entry's bytes (key 1, value 2) are the same in each message; only the field
// number that carries the entries differs. So a map is kept as its records (tag,
// length, entry) and moved from one message to the other by rewriting each
// record's one-byte tag. The records travel as the message's unknown fields,
// which proto.Marshal writes out verbatim: the backend PredictRequest's inputs,
// and the caller's PredictResponse's raw_outputs, come out as the bytes that came
// in. Field numbers of the four maps:
const (
	fieldRawInputs  protowire.Number = 6 // tfgate.v1.PredictRequest.raw_inputs
	fieldRawOutputs protowire.Number = 7 // tfgate.v1.PredictResponse.raw_outputs
	fieldInputs     protowire.Number = 2 // tensorflow.serving.PredictRequest.inputs
	fieldOutputs    protowire.Number = 1 // tensorflow.serving.PredictResponse.outputs

	fieldModelSpec protowire.Number = 2 // tensorflow.serving.PredictResponse.model_spec
)

// wireTensor is one entry of a kept tensor map: its key and the header of its
// tensor, read from the wire bytes (tensor.ParseHeader), which is what the
// request checks need.
type wireTensor struct {
	key []byte // aliases the received bytes
	hdr tensor.Header
}

// wireTensors is a tensor map kept as its wire records. recs is every record,
// contiguous; each record's tag is one byte (what every encoder writes for field
// numbers below 16), so a record moves to another field number by rewriting that
// byte in place (retag). recs aliases a buffer the codec copied the message into,
// owned by the one call it arrived for.
type wireTensors struct {
	recs    []byte
	tensors []wireTensor  // in arrival order; only when the map was read with headers
	buf     [2]wireTensor // tensors' first backing array: no allocation for two inputs
}

func (w *wireTensors) len() int {
	if w == nil {
		return 0
	}
	return len(w.tensors)
}

// span is a byte range of a message, [from, to).
type span struct{ from, to int }

// scanTensorMap walks the top-level fields of the message b and keeps the
// records of field, a map<string, TensorProto>: recs (see [wireTensors]). The
// other fields are appended to rest as spans, in order, for a normal decode
// (decoding them one span after another, with proto.UnmarshalOptions{Merge:
// true}, is decoding the message without the map). When other is not nil, a
// field it rejects makes ok false. Every entry's tensor header is read
// (tensor.ParseHeader); when tensors is not nil, the entries are appended to it.
//
// ok is false when b is not in the form this pass-through handles -- malformed
// bytes, a map record whose tag is not one byte, an entry with fields other
// than one key and one value, a key that is not UTF-8, a repeated key, a tensor
// ParseHeader declines -- and the caller then decodes the message in full, so
// that everything unusual (and every error) is exactly what proto.Unmarshal makes
// of it.
func scanTensorMap(b []byte, field protowire.Number, other func(protowire.Number) bool, tensors *[]wireTensor, rest []span) (_ []span, recs []byte, ok bool) {
	var runsBuf [2]span
	runs := runsBuf[:0] // the map's records
	for off := 0; off < len(b); {
		num, typ, n := protowire.ConsumeTag(b[off:])
		if n < 0 {
			return nil, nil, false
		}
		v := protowire.ConsumeFieldValue(num, typ, b[off+n:])
		if v < 0 {
			return nil, nil, false
		}
		end := off + n + v
		if num != field {
			if other != nil && !other(num) {
				return nil, nil, false
			}
			if k := len(rest) - 1; k >= 0 && rest[k].to == off {
				rest[k].to = end
			} else {
				rest = append(rest, span{off, end})
			}
			off = end
			continue
		}
		if typ != protowire.BytesType || n != 1 {
			return nil, nil, false
		}
		entry, _ := protowire.ConsumeBytes(b[off+n:])
		key, hdr, ok := parseEntry(entry)
		if !ok {
			return nil, nil, false
		}
		if tensors != nil {
			for i := range *tensors {
				if bytes.Equal((*tensors)[i].key, key) {
					return nil, nil, false // the decoder keeps the last; keep it simple
				}
			}
			*tensors = append(*tensors, wireTensor{key: key, hdr: hdr})
		}
		if k := len(runs) - 1; k >= 0 && runs[k].to == off {
			runs[k].to = end
		} else {
			runs = append(runs, span{off, end})
		}
		off = end
	}
	switch len(runs) {
	case 0:
	case 1:
		recs = b[runs[0].from:runs[0].to:runs[0].to]
	default: // records interleaved with other fields: gather them
		n := 0
		for _, r := range runs {
			n += r.to - r.from
		}
		recs = make([]byte, 0, n)
		for _, r := range runs {
			recs = append(recs, b[r.from:r.to]...)
		}
	}
	return rest, recs, true
}

// hasField reports whether the message b has a top-level field num (false
// when b is malformed before one is found).
func hasField(b []byte, num protowire.Number) bool {
	for len(b) > 0 {
		n, typ, t := protowire.ConsumeTag(b)
		if t < 0 {
			return false
		}
		if n == num {
			return true
		}
		v := protowire.ConsumeFieldValue(n, typ, b[t:])
		if v < 0 {
			return false
		}
		b = b[t+v:]
	}
	return false
}

// parseEntry reads one map<string, TensorProto> entry: exactly one key and one
// value, the key valid UTF-8, the value a tensor ParseHeader reads.
func parseEntry(b []byte) (key []byte, hdr tensor.Header, ok bool) {
	var haveKey, haveVal bool
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.BytesType {
			return nil, hdr, false
		}
		v, m := protowire.ConsumeBytes(b[n:])
		if m < 0 {
			return nil, hdr, false
		}
		switch {
		case num == 1 && !haveKey:
			if !utf8.Valid(v) {
				return nil, hdr, false
			}
			key, haveKey = v, true
		case num == 2 && !haveVal:
			if hdr, ok = tensor.ParseHeader(v); !ok {
				return nil, hdr, false
			}
			haveVal = true
		default:
			return nil, hdr, false
		}
		b = b[n+m:]
	}
	return key, hdr, haveKey && haveVal
}

// retag sets the field number of every record in recs (each with a one-byte tag,
// as scanTensorMap keeps them) to num, in place.
func retag(recs []byte, num protowire.Number) {
	tag := byte(protowire.EncodeTag(num, protowire.BytesType))
	for off := 0; off < len(recs); {
		recs[off] = tag
		_, n := protowire.ConsumeBytes(recs[off+1:])
		off += 1 + n
	}
}

// decodeSpans decodes the spans of b into msg, one after another.
func decodeSpans(b []byte, rest []span, msg proto.Message) error {
	for _, sp := range rest {
		if err := (proto.UnmarshalOptions{Merge: true}).Unmarshal(b[sp.from:sp.to], msg); err != nil {
			return err
		}
	}
	return nil
}

// setInputs makes raw the inputs of the backend request req: its records, retagged
// as inputs, are req's unknown fields, written out after its model spec.
func setInputs(req *servingpb.PredictRequest, raw *wireTensors) {
	retag(raw.recs, fieldInputs)
	req.ProtoReflect().SetUnknown(protoreflect.RawFields(raw.recs))
}

// decodeInputs decodes inputs that setInputs left encoded (the batcher decodes
// the ones it does not concatenate as wire bytes itself). A request without them is left as it is.
func decodeInputs(req *servingpb.PredictRequest) error {
	return tensor.DecodeKept(req, fieldInputs)
}

// deferredOutputs are a backend response's outputs that [backendCodec] kept
// encoded, nil when it decoded them (or the response came from elsewhere). The
// codec's unknown fields are then its output records and nothing else; a
// response it decoded in full has no unknown field 1 of the bytes wire type
// (that is outputs, which the decoder decodes), so the first record tells.
func deferredOutputs(resp *servingpb.PredictResponse) []byte {
	return tensor.KeptRecords(resp.ProtoReflect(), fieldOutputs)
}

// decodeOutputs decodes the outputs [backendCodec] kept encoded, for the code
// that reads them (the typed path; the batcher splits them as they are).
func decodeOutputs(resp *servingpb.PredictResponse) error {
	return tensor.DecodeKept(resp, fieldOutputs)
}

// takeOutputs moves the outputs [backendCodec] kept encoded out of resp,
// retagged as field num of the message they go to; nil when there are none.
func takeOutputs(resp *servingpb.PredictResponse, num protowire.Number) []byte {
	recs := deferredOutputs(resp)
	if recs == nil {
		return nil
	}
	resp.ProtoReflect().SetUnknown(nil)
	retag(recs, num)
	return recs
}
