package gateway

import (
	"errors"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// registerReflection serves gRPC server reflection (v1 and v1alpha) from descriptors
// that carry the API's comments (tfgatev1.SourceFiles), so grpcurl describe and
// reflection-based UIs show its documentation; descriptors of other services (health)
// come from the compiled-in registry. Without the source set it falls back to the
// compiled-in descriptors and says so.
func registerReflection(gs *grpc.Server, log *slog.Logger) {
	var res protodesc.Resolver = protoregistry.GlobalFiles
	if files, err := tfgatev1.SourceFiles(); err != nil {
		log.Warn("reflection serves descriptors without comments", "err", err)
	} else {
		res = layered{files, protoregistry.GlobalFiles}
	}
	opts := reflection.ServerOptions{Services: gs, DescriptorResolver: res}
	reflectionv1.RegisterServerReflectionServer(gs, reflection.NewServerV1(opts))
	reflectionv1alpha.RegisterServerReflectionServer(gs, reflection.NewServer(opts))
}

// layered resolves from the first resolver that knows a name.
type layered []protodesc.Resolver

func (l layered) FindFileByPath(path string) (protoreflect.FileDescriptor, error) {
	for _, r := range l {
		if fd, err := r.FindFileByPath(path); err == nil || !errors.Is(err, protoregistry.NotFound) {
			return fd, err
		}
	}
	return nil, protoregistry.NotFound
}

func (l layered) FindDescriptorByName(name protoreflect.FullName) (protoreflect.Descriptor, error) {
	for _, r := range l {
		if d, err := r.FindDescriptorByName(name); err == nil || !errors.Is(err, protoregistry.NotFound) {
			return d, err
		}
	}
	return nil, protoregistry.NotFound
}
