package gateway

import (
	"context"
	"runtime"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/tfgate/tfgate/internal/testwait"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// badUTF8Request is a PredictRequest for reviews whose one instance has text that
// is not valid UTF-8 (what a Go client refuses to build).
func badUTF8Request(t *testing.T) rawBytes {
	t.Helper()
	var inst []byte
	inst = protowire.AppendTag(inst, 1, protowire.BytesType)
	inst = protowire.AppendBytes(inst, []byte("ok \xff\xfe bad"))
	b, err := proto.Marshal(&tfgatev1.PredictRequest{Model: "reviews"})
	if err != nil {
		t.Fatal(err)
	}
	b = protowire.AppendTag(b, 5, protowire.BytesType)
	return protowire.AppendBytes(b, inst)
}

// A request that fails to decode and is rejected by an interceptor before
// Predict runs leaves nothing behind: its decode error travels with the request,
// so once the call is over the request can be collected.
func TestRejectedUndecodableRequestIsNotRetained(t *testing.T) {
	collected := make(chan struct{})
	reject := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if info.FullMethod != tfgatev1.GatewayService_Predict_FullMethodName {
			return handler(ctx, req)
		}
		runtime.AddCleanup(req.(*tfgatev1.PredictRequest), func(ch chan struct{}) { close(ch) }, collected)
		return nil, status.Error(codes.PermissionDenied, "rejected by the test's interceptor")
	}
	s := startStack(t, stackOpts{serverOptions: []grpc.ServerOption{grpc.ChainUnaryInterceptor(reject)}})

	out := new(tfgatev1.PredictResponse)
	err := s.conn.Invoke(context.Background(), tfgatev1.GatewayService_Predict_FullMethodName, badUTF8Request(t), out, grpcRawCodec())
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("Predict rejected by an interceptor = %v, want the interceptor's PERMISSION_DENIED", err)
	}
	// Wait for the collector to free the request (a request the server keeps is
	// never freed, and the wait gives up).
	testwait.Until(t, "the rejected request to be collected (nothing may keep it, or its decode error, after the call)", func() bool {
		runtime.GC()
		select {
		case <-collected:
			return true
		default:
			return false
		}
	})
}

// Without an interceptor in the way, the decode error reaches Predict, which
// answers INVALID_ARGUMENT saying what to fix, and the call holds nothing after.
func TestUndecodableRequestIsInvalidArgument(t *testing.T) {
	s := startStack(t, stackOpts{})
	out := new(tfgatev1.PredictResponse)
	err := s.conn.Invoke(context.Background(), tfgatev1.GatewayService_Predict_FullMethodName, badUTF8Request(t), out, grpcRawCodec())
	if status.Code(err) != codes.InvalidArgument || !contains(err, "must be valid UTF-8") {
		t.Errorf("Predict with invalid UTF-8 text = %v; want INVALID_ARGUMENT saying strings must be valid UTF-8", err)
	}
	// A well-formed request on the same connection is not affected.
	if _, err := s.client.Predict(context.Background(), &tfgatev1.PredictRequest{Model: "reviews", Instances: text("fine")}); err != nil {
		t.Errorf("Predict after an undecodable request: %v", err)
	}
}
