package gateway

import (
	"context"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"

	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// codec is grpc-go's proto codec, except that it decodes a Predict call's request
// into a [decodedPredict]: a tfgate.v1.PredictRequest that fails to decode (most
// often: a string field, such as text, that is not valid UTF-8) is then not
// answered with grpc-go's INTERNAL "error unmarshalling request"; the error
// travels with the request to Predict, which answers INVALID_ARGUMENT saying what
// to fix. It holds no state: nothing about a call outlives it.
type codec struct {
	base encoding.CodecV2
}

func newCodec() *codec { return &codec{base: encoding.GetCodecV2("proto")} }

func (c *codec) Name() string { return "proto" }

func (c *codec) Marshal(v any) (mem.BufferSlice, error) { return c.base.Marshal(v) }

func (c *codec) Unmarshal(data mem.BufferSlice, v any) error {
	if d, ok := v.(*decodedPredict); ok {
		d.err = c.base.Unmarshal(data, d.req)
		return nil
	}
	return c.base.Unmarshal(data, v)
}

// decodedPredict is what the Predict handler decodes into: the request and, when
// it did not decode, why. It lives on the handler's stack for one call.
type decodedPredict struct {
	req *tfgatev1.PredictRequest
	err error
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
		return s.serve(ctx, d.req, d.err)
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: tfgatev1.GatewayService_Predict_FullMethodName}
	return interceptor(ctx, d.req, info, func(ctx context.Context, req any) (any, error) {
		return s.serve(ctx, req.(*tfgatev1.PredictRequest), d.err)
	})
}
