package gateway

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tfgate/tfgate/gateway/batching"
	"github.com/tfgate/tfgate/gateway/hosts"
	"github.com/tfgate/tfgate/gateway/route"
	"github.com/tfgate/tfgate/internal/tensor"
	"github.com/tfgate/tfgate/preprocess"
	tfpb "github.com/tfgate/tfgate/proto/tensorflow"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

func TestCode(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf(`model "m" version 3: %w`, err) }
	tests := []struct {
		name string
		err  error
		want codes.Code
	}{
		{"nil", nil, codes.OK},
		{"bad request", badRequest("x"), codes.InvalidArgument},
		{"too large", tooLarge("x"), codes.InvalidArgument},
		{"no spec", wrap(ErrNoSpec), codes.FailedPrecondition},
		{"ensemble classes", wrap(ErrEnsembleClasses), codes.FailedPrecondition},
		{"version not served", wrap(ErrVersionNotServed), codes.NotFound},
		{"spec pending", wrap(ErrSpecPending), codes.Unavailable},
		{"shutting down", ErrShuttingDown, codes.Unavailable},
		{"cold start timed out", &ColdStartError{Model: "m", Version: 3, Hosts: []string{"h1"}}, codes.Unavailable},
		{"cold start timed out, wrapped", wrap(fmt.Errorf("%w", &ColdStartError{Model: "m", Version: 3})), codes.Unavailable},
		{"cold queue full", wrap(ErrColdQueueFull), codes.ResourceExhausted},
		{"unplaceable", wrap(ErrUnplaceable), codes.FailedPrecondition},
		{"version mismatch", wrap(ErrVersionMismatch), codes.Internal},
		{"bad backend response", wrap(ErrBadBackendResponse), codes.Internal},
		{"deadline too short", wrap(ErrDeadlineTooShort), codes.DeadlineExceeded},
		{"unknown model", &route.RouteError{Model: "m", Err: route.ErrUnknownModel}, codes.NotFound},
		{"unknown label", &route.RouteError{Model: "m", Err: route.ErrUnknownLabel}, codes.InvalidArgument},
		{"no default route", &route.RouteError{Model: "m", Err: route.ErrNoDefaultRoute}, codes.InvalidArgument},
		{"not routable", &route.RouteError{Model: "m", Err: route.ErrNotRoutable}, codes.Unavailable},
		{"invalid input", wrap(fmt.Errorf("%w: instance 0", preprocess.ErrInvalidInput)), codes.InvalidArgument},
		{"input over spec limit", wrap(&preprocess.InputError{Index: 0, Problem: "x"}), codes.InvalidArgument},
		{"bad output", wrap(preprocess.ErrOutput), codes.Internal},
		{"signature", wrap(preprocess.ErrSignature), codes.Internal},
		{"version unavailable on hosts", wrap(hosts.ErrVersionUnavailable), codes.NotFound},
		{"no host", wrap(hosts.ErrNoHost), codes.Unavailable},
		{"hosts closed", wrap(hosts.ErrClosed), codes.Unavailable},
		{"no version pinned", wrap(hosts.ErrNoVersion), codes.Internal},
		{"unknown pool", wrap(hosts.ErrUnknownPool), codes.Internal},
		{"batcher closed", wrap(batching.ErrClosed), codes.Unavailable},
		{"batcher closed, as the batcher words it", wrap(fmt.Errorf("m/3/serving_default: %w; the gateway is shutting down, retry on another instance", batching.ErrClosed)), codes.Unavailable},
		{"batch input malformed", wrap(fmt.Errorf("%w: input %q is malformed", batching.ErrInvalidRequest, "x")), codes.InvalidArgument},
		{"batching config invalid", wrap(fmt.Errorf("%w for m/3: %w", batching.ErrInvalidConfig, errors.New("max_batch_size must be positive"))), codes.FailedPrecondition},
		{"batch queue full", wrap(fmt.Errorf("%w: 10 batches queued", batching.ErrQueueFull)), codes.ResourceExhausted},
		{"batch deadline too short", wrap(fmt.Errorf("%w: m/3: 1ms left", batching.ErrDeadline)), codes.DeadlineExceeded},
		{"deadline", wrap(context.DeadlineExceeded), codes.DeadlineExceeded},
		{"canceled", wrap(context.Canceled), codes.Canceled},
		{"backend status passes through", wrap(status.Error(codes.FailedPrecondition, `Serving signature key "x" not found.`)), codes.FailedPrecondition},
		{"backend resource exhausted", wrap(status.Error(codes.ResourceExhausted, "queue full")), codes.ResourceExhausted},
		{"backend status joined with its host", errors.Join(errors.New("host h:1"), status.Error(codes.InvalidArgument, "input size does not match signature")), codes.InvalidArgument},
		{"no host joined", errors.Join(errors.New("x"), hosts.ErrNoHost), codes.Unavailable},
		{"unknown", errors.New("boom"), codes.Unknown},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Code(tc.err); got != tc.want {
				t.Errorf("Code(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestToStatusMessage(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"wrapped backend status shows its message, not the rpc error prefix",
			fmt.Errorf(`model "m" version 3: host h:1: %w`, status.Error(codes.InvalidArgument, "input size does not match signature")),
			`model "m" version 3: host h:1: input size does not match signature`},
		{"plain", fmt.Errorf(`model "m": %w`, ErrNoSpec), `model "m": version has no usable preprocessing spec`},
		{"bare status", status.Error(codes.NotFound, "Servable not found"), "Servable not found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := status.Convert(toStatus(tc.err))
			if st.Message() != tc.want {
				t.Errorf("toStatus(%v) message = %q, want %q", tc.err, st.Message(), tc.want)
			}
		})
	}
}

// The batching package's own errors, as it returns them, map to their codes.
func TestCodeOfBatchingErrors(t *testing.T) {
	ctx := context.Background()
	g := batching.NewGroup(func(context.Context, []string, *servingpb.PredictRequest) (*servingpb.PredictResponse, error) {
		t.Error("backend called")
		return nil, errors.New("unreachable")
	}, batching.Options{})
	on := batching.DefaultConfig()
	on.Enabled = true
	pinned := func() *servingpb.PredictRequest {
		return &servingpb.PredictRequest{
			ModelSpec: &servingpb.ModelSpec{Name: "m", VersionChoice: &servingpb.ModelSpec_Version{Version: wrapperspb.Int64(3)}},
			Inputs:    map[string]*tfpb.TensorProto{"x": {Dtype: tfpb.DataType_DT_FLOAT, TensorShape: tensor.Shape(2, 2), FloatVal: []float32{1}}},
		}
	}
	invalidCfg := on
	invalidCfg.MaxBatchSize = 0
	unpinned := pinned()
	unpinned.ModelSpec.VersionChoice = nil

	tests := []struct {
		name string
		do   func() error
		want codes.Code
	}{
		{"malformed input", func() error { _, err := g.Do(ctx, on, nil, pinned()); return err }, codes.InvalidArgument},
		{"no explicit version", func() error { _, err := g.Do(ctx, on, nil, unpinned); return err }, codes.InvalidArgument},
		{"invalid config", func() error { _, err := g.Do(ctx, invalidCfg, nil, pinned()); return err }, codes.FailedPrecondition},
		{"closed", func() error {
			if err := g.Close(ctx); err != nil {
				t.Fatal(err)
			}
			_, err := g.Do(ctx, on, nil, pinned())
			return err
		}, codes.Unavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			if got := Code(err); got != tc.want {
				t.Errorf("Code(%v) = %v, want %v", err, got, tc.want)
			}
			// The code is chosen here, not by batching: its errors carry no status.
			var se interface{ GRPCStatus() *status.Status }
			if errors.As(err, &se) {
				t.Errorf("batching returned a gRPC status (%v); it should return its sentinel errors", err)
			}
		})
	}
}
