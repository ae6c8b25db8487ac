package tfgatev1

import (
	_ "embed"
	"fmt"
	"sync"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

// sourceDescriptors is the descriptor set of tfgate/v1 and its imports with source
// info, written by scripts/protogen.sh (protoc --include_source_info).
//
//go:embed tfgate.binpb
var sourceDescriptors []byte

var (
	sourceOnce  sync.Once
	sourceFiles *protoregistry.Files
	sourceErr   error
)

// SourceFiles returns the API's file descriptors with their comments, which the
// descriptors compiled into this package lack, for serving over reflection.
func SourceFiles() (*protoregistry.Files, error) {
	sourceOnce.Do(func() {
		var set descriptorpb.FileDescriptorSet
		if err := proto.Unmarshal(sourceDescriptors, &set); err != nil {
			sourceErr = fmt.Errorf("tfgate.binpb: %w", err)
			return
		}
		sourceFiles, sourceErr = protodesc.NewFiles(&set)
		if sourceErr != nil {
			sourceErr = fmt.Errorf("tfgate.binpb: %w", sourceErr)
		}
	})
	return sourceFiles, sourceErr
}
