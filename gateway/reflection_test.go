package gateway

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"

	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// TestReflectionServesComments: what grpcurl describe shows comes from reflection, and
// the descriptors protoc-gen-go compiles in carry no comments.
func TestReflectionServesComments(t *testing.T) {
	gs := grpc.NewServer()
	tfgatev1.RegisterGatewayServiceServer(gs, tfgatev1.UnimplementedGatewayServiceServer{})
	registerReflection(gs, slog.New(slog.DiscardHandler))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	defer gs.Stop()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	stream, err := reflectionv1.NewServerReflectionClient(cc).ServerReflectionInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ask := func(req *reflectionv1.ServerReflectionRequest) *reflectionv1.ServerReflectionResponse {
		t.Helper()
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := ask(&reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_FileContainingSymbol{
		FileContainingSymbol: "tfgate.v1.GatewayService"}})
	fds := resp.GetFileDescriptorResponse().GetFileDescriptorProto()
	if len(fds) == 0 {
		t.Fatalf("no descriptor for tfgate.v1.GatewayService: %v", resp)
	}
	var fd descriptorpb.FileDescriptorProto
	if err := proto.Unmarshal(fds[0], &fd); err != nil {
		t.Fatal(err)
	}
	var comments strings.Builder
	for _, loc := range fd.GetSourceCodeInfo().GetLocation() {
		comments.WriteString(loc.GetLeadingComments())
	}
	if !strings.Contains(comments.String(), "model is the model's name in the routing config") {
		t.Errorf("%s served over reflection without its comments (%d source locations)", fd.GetName(), len(fd.GetSourceCodeInfo().GetLocation()))
	}
	// Services other than the API still resolve, from the compiled-in registry.
	resp = ask(&reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_FileContainingSymbol{
		FileContainingSymbol: "grpc.reflection.v1.ServerReflection"}})
	if resp.GetErrorResponse() != nil {
		t.Errorf("reflection of the reflection service: %v", resp.GetErrorResponse())
	}
	stream.CloseSend()
}
