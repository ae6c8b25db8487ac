package gateway

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tfgate/tfgate/gateway/batching"
	"github.com/tfgate/tfgate/gateway/hosts"
	"github.com/tfgate/tfgate/gateway/route"
	"github.com/tfgate/tfgate/preprocess"
)

// Sentinel errors of the request path. Errors the server returns wrap one of these,
// a sentinel of route, preprocess, hosts or batching, a context error, or a
// backend's gRPC status; [Code] maps each to the caller's code.
var (
	// ErrBadRequest: the request is malformed (missing model, bad UTF-8, NaN
	// feature, bad raw tensor...). INVALID_ARGUMENT.
	ErrBadRequest = errors.New("invalid request")
	// ErrTooLarge: the request is over a configured limit. INVALID_ARGUMENT.
	ErrTooLarge = errors.New("request over limit")
	// ErrVersionNotServed: the version has neither a directory under the model
	// root nor a host reporting it AVAILABLE. NOT_FOUND.
	ErrVersionNotServed = errors.New("version not served")
	// ErrNoSpec: a typed request for a version without a usable preprocessing
	// spec. FAILED_PRECONDITION.
	ErrNoSpec = errors.New("version has no usable preprocessing spec")
	// ErrSpecPending: the version's spec is loaded but not yet checked against the
	// model's signature. UNAVAILABLE (retry shortly).
	ErrSpecPending = errors.New("preprocessing spec not yet checked against the model signature")
	// ErrVersionMismatch: the backend answered for another version than the one
	// pinned. INTERNAL; counted.
	ErrVersionMismatch = errors.New("backend answered for a different version")
	// ErrBadBackendResponse: the backend's response cannot be used. INTERNAL.
	ErrBadBackendResponse = errors.New("unusable backend response")
	// ErrDeadlineTooShort: the caller's deadline leaves no time for the backend
	// call. DEADLINE_EXCEEDED.
	ErrDeadlineTooShort = errors.New("deadline too short")
	// ErrShuttingDown: the server is stopping. UNAVAILABLE.
	ErrShuttingDown = errors.New("gateway shutting down")
	// ErrEnsembleClasses: the members of a mean, weighted_mean or vote ensemble
	// answered with different class lists (a spec changed since the config
	// was checked). FAILED_PRECONDITION.
	ErrEnsembleClasses = errors.New("ensemble members score different classes")
)

// Code maps an error from the request path to the gRPC code the caller gets. It is
// the only place where codes are chosen.
func Code(err error) codes.Code {
	switch {
	case err == nil:
		return codes.OK
	// The gateway's own request checks.
	case errors.Is(err, ErrBadRequest), errors.Is(err, ErrTooLarge):
		return codes.InvalidArgument
	case errors.Is(err, ErrNoSpec), errors.Is(err, ErrEnsembleClasses):
		return codes.FailedPrecondition
	case errors.Is(err, ErrVersionNotServed):
		return codes.NotFound
	case errors.Is(err, ErrSpecPending), errors.Is(err, ErrShuttingDown):
		return codes.Unavailable
	case errors.Is(err, ErrColdStart): // held for a load that did not finish in time
		return codes.Unavailable
	case errors.Is(err, ErrColdQueueFull):
		return codes.ResourceExhausted
	case errors.Is(err, ErrUnplaceable):
		return codes.FailedPrecondition
	case errors.Is(err, ErrVersionMismatch), errors.Is(err, ErrBadBackendResponse):
		return codes.Internal
	case errors.Is(err, ErrDeadlineTooShort):
		return codes.DeadlineExceeded
	// Routing.
	case errors.Is(err, route.ErrUnknownModel):
		return codes.NotFound
	case errors.Is(err, route.ErrUnknownLabel), errors.Is(err, route.ErrNoDefaultRoute):
		return codes.InvalidArgument // as TF Serving answers an unknown label
	case errors.Is(err, route.ErrNotRoutable):
		return codes.Unavailable
	// Preprocessing.
	case errors.Is(err, preprocess.ErrInvalidInput):
		return codes.InvalidArgument
	case errors.Is(err, preprocess.ErrOutput), errors.Is(err, preprocess.ErrSignature):
		return codes.Internal
	// Hosts.
	case errors.Is(err, hosts.ErrVersionUnavailable):
		return codes.NotFound
	case errors.Is(err, hosts.ErrNoHost), errors.Is(err, hosts.ErrClosed):
		return codes.Unavailable
	case errors.Is(err, hosts.ErrNoVersion), errors.Is(err, hosts.ErrUnknownPool):
		return codes.Internal
	// Batching.
	case errors.Is(err, batching.ErrClosed):
		return codes.Unavailable
	case errors.Is(err, batching.ErrInvalidRequest):
		return codes.InvalidArgument // as TF Serving's own batching answers
	case errors.Is(err, batching.ErrInvalidConfig):
		return codes.FailedPrecondition
	case errors.Is(err, batching.ErrQueueFull):
		return codes.ResourceExhausted
	case errors.Is(err, batching.ErrDeadline):
		return codes.DeadlineExceeded
	// Context.
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	}
	// A backend's gRPC status, possibly wrapped: its code passes through unchanged.
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		return se.GRPCStatus().Code()
	}
	return codes.Unknown
}

// toStatus turns an error into the status the caller gets: Code's code and the
// full wrapped message (which names the model and version).
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	return status.Error(Code(err), message(err))
}

// message is err's text for the caller: a wrapped gRPC status shown as its message
// only ("rpc error: code = X desc = " is noise to a caller who gets the code anyway),
// and no backend host address (hosts.HostError names it for logs and spans; internal
// topology is not the caller's business).
func message(err error) string {
	text := err.Error()
	var he *hosts.HostError
	if errors.As(err, &he) {
		text = replaceOnce(text, "host "+he.Addr+": ", "")
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		if s := se.GRPCStatus(); s.Err() != nil && s.Err().Error() != text {
			// err wraps the status: rebuild the text with the status' message.
			return replaceOnce(text, s.Err().Error(), s.Message())
		} else if s.Err() != nil {
			return s.Message()
		}
	}
	return text
}

func replaceOnce(s, old, repl string) string {
	for i := 0; i+len(old) <= len(s); i++ {
		if s[i:i+len(old)] == old {
			return s[:i] + repl + s[i+len(old):]
		}
	}
	return s
}

// badRequest builds an ErrBadRequest error.
func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadRequest, fmt.Sprintf(format, args...))
}

// tooLarge builds an ErrTooLarge error.
func tooLarge(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrTooLarge, fmt.Sprintf(format, args...))
}
