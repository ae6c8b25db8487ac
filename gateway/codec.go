package gateway

import (
	"bytes"
	"context"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// codec is grpc-go's proto codec, except that it decodes a Predict call's request
// into a [decodedPredict]: a tfgate.v1.PredictRequest that fails to decode (most
// often: a string field, such as text, that is not valid UTF-8) is then not
// answered with grpc-go's INTERNAL "error unmarshalling request"; the error
// travels with the request to Predict, which answers INVALID_ARGUMENT saying what
// to fix. Its raw_inputs are kept as they arrived, for the backend request to
// carry unchanged (wire.go). It holds no state: nothing about a call outlives it.
type codec struct {
	base encoding.CodecV2
}

func newCodec() *codec { return &codec{base: encoding.GetCodecV2("proto")} }

func (c *codec) Name() string { return "proto" }

func (c *codec) Marshal(v any) (mem.BufferSlice, error) { return c.base.Marshal(v) }

func (c *codec) Unmarshal(data mem.BufferSlice, v any) error {
	if d, ok := v.(*decodedPredict); ok {
		buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
		defer buf.Free()
		b := buf.ReadOnlyData()
		if hasField(b, fieldRawInputs) {
			// The kept records alias the bytes and are retagged in place: the
			// call gets its own copy (a typed request decodes from the buffer).
			b = bytes.Clone(b)
		}
		d.decode(b)
		return nil
	}
	return c.base.Unmarshal(data, v)
}

// decodedPredict is what the Predict handler decodes into: the request, its
// raw_inputs kept as they arrived (wire.go), and, when it did not decode, why.
// It lives on the handler's stack for one call.
type decodedPredict struct {
	req *tfgatev1.PredictRequest
	raw wireTensors // raw_inputs, when kept (none: decoded into req, if any)
	err error
}

// rawInputs are the kept raw_inputs, nil when there are none.
func (d *decodedPredict) rawInputs() *wireTensors {
	if len(d.raw.tensors) == 0 {
		return nil
	}
	return &d.raw
}

// decode decodes b, a copy of the received message that the call owns: every
// field but raw_inputs into req, raw_inputs kept as records with their tensor
// headers read (scanTensorMap). A request scanTensorMap declines is decoded in
// full, as grpc-go's codec does, with its error.
func (d *decodedPredict) decode(b []byte) {
	var buf [4]span
	d.raw.tensors = d.raw.buf[:0]
	rest, recs, ok := scanTensorMap(b, fieldRawInputs, nil, &d.raw.tensors, buf[:0])
	d.raw.recs = recs
	if ok {
		if err := decodeSpans(b, rest, d.req); err == nil {
			return
		}
		proto.Reset(d.req)
	}
	d.raw = wireTensors{}
	d.err = proto.Unmarshal(b, d.req)
}

// backendCodec is grpc-go's proto codec on the gateway's backend connections,
// except that a tensorflow.serving.PredictResponse's outputs stay encoded: they
// are checked (scanTensorMap: well-formed, every tensor's header readable) and
// kept, as received, in the response's unknown fields, for the raw path to pass
// on as they are (takeOutputs) and the code that reads them to decode
// (decodeOutputs). A response in any other form is decoded in full.
type backendCodec struct {
	base encoding.CodecV2
}

func newBackendCodec() backendCodec { return backendCodec{base: encoding.GetCodecV2("proto")} }

func (c backendCodec) Name() string { return "proto" }

func (c backendCodec) Marshal(v any) (mem.BufferSlice, error) { return c.base.Marshal(v) }

func isModelSpec(n protowire.Number) bool { return n == fieldModelSpec }

func (c backendCodec) Unmarshal(data mem.BufferSlice, v any) error {
	resp, ok := v.(*servingpb.PredictResponse)
	if !ok {
		return c.base.Unmarshal(data, v)
	}
	b := data.Materialize()
	var buf [2]span
	rest, recs, ok := scanTensorMap(b, fieldOutputs, isModelSpec, nil, buf[:0])
	if ok {
		// Kept outputs are the response's only unknown fields (deferredOutputs):
		// a model_spec of another wire type, which the decoder keeps as an
		// unknown field, sends the response to the full decode.
		err := decodeSpans(b, rest, resp)
		if m := resp.ProtoReflect(); err == nil && len(m.GetUnknown()) == 0 {
			if len(recs) > 0 {
				m.SetUnknown(protoreflect.RawFields(recs))
			}
			return nil
		}
		proto.Reset(resp)
	}
	return proto.Unmarshal(b, resp)
}

// serviceDesc is tfgate.v1.GatewayService's descriptor with a Predict handler
// that decodes through [codec] into a [decodedPredict]. It must be registered on
// a server forced to use the codec (grpc.ForceServerCodecV2).
func serviceDesc() *grpc.ServiceDesc {
	desc := tfgatev1.GatewayService_ServiceDesc
	desc.Methods = slices.Clone(desc.Methods)
	for i := range desc.Methods {
		if desc.Methods[i].MethodName == "Predict" {
			desc.Methods[i].Handler = predictHandler
		}
	}
	return &desc
}

// predictHandler is the generated Predict handler, except that the decode error
// is carried to the server with the request. Interceptors see the request as
// decoded (in part, on error); one that rejects the call leaves nothing behind.
func predictHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	d := decodedPredict{req: new(tfgatev1.PredictRequest)}
	if err := dec(&d); err != nil {
		return nil, err
	}
	s := srv.(*Server)
	if interceptor == nil {
		return s.serve(ctx, d.req, d.rawInputs(), true, d.err)
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: tfgatev1.GatewayService_Predict_FullMethodName}
	return interceptor(ctx, d.req, info, func(ctx context.Context, req any) (any, error) {
		r := req.(*tfgatev1.PredictRequest)
		if r != d.req { // an interceptor replaced the request: serve that one
			return s.serve(ctx, r, nil, true, d.err)
		}
		return s.serve(ctx, r, d.rawInputs(), true, d.err)
	})
}
