package servingsim

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tfgate/tfgate/internal/servingsim/model"
	tferrpb "github.com/tfgate/tfgate/proto/tensorflow/error"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

// Error is an error with the TensorFlow (= gRPC) code TF Serving would answer with.
// Its message is exactly TF Serving's text for the case.
type Error struct {
	Code codes.Code
	Msg  string
}

func (e *Error) Error() string { return e.Code.String() + ": " + e.Msg }

func tfErr(c codes.Code, format string, a ...any) error {
	return &Error{Code: c, Msg: fmt.Sprintf(format, a...)}
}

// Sentinel errors for callers of the Go API (Server.Reload).
var (
	// ErrConfig reports a ModelServerConfig TF Serving would reject.
	ErrConfig = errors.New("invalid model server config")
)

// codeOf maps any error the server produces to its code and message. It is the one
// place errors become codes.
func codeOf(err error) (codes.Code, string) {
	var te *Error
	var ie *model.InputError
	switch {
	case err == nil:
		return codes.OK, ""
	case errors.As(err, &te):
		return te.Code, te.Msg
	case errors.As(err, &ie):
		return codes.InvalidArgument, ie.Msg
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		s := status.FromContextError(err)
		return s.Code(), s.Message()
	case errors.Is(err, model.ErrNoSavedModel):
		return codes.NotFound, err.Error()
	case errors.Is(err, model.ErrSpec), errors.Is(err, ErrConfig):
		return codes.InvalidArgument, err.Error()
	}
	if s, ok := status.FromError(err); ok {
		return s.Code(), s.Message()
	}
	return codes.Internal, err.Error()
}

// toStatus converts err to a gRPC status error (nil for nil).
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	c, msg := codeOf(err)
	return status.Error(c, msg)
}

// statusProto converts err to the StatusProto GetModelStatus and
// HandleReloadConfigRequest report (error_code 0 and no message for nil).
func statusProto(err error) *servingpb.StatusProto {
	c, msg := codeOf(err)
	return &servingpb.StatusProto{ErrorCode: tferrpb.Code(c), ErrorMessage: msg}
}

// LabelHint follows TF Serving's text for a label on a version that is not AVAILABLE
// (which it leaves there): the flag that allows it, TF Serving's own flag too. The
// text before it is TF Serving's, so clients that match on it still do.
const LabelHint = " (start the server with --allow_version_labels_for_unavailable_models to assign labels to versions that are not loaded yet)"
