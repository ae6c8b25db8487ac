package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tfgate/tfgate/gateway/batching"
	"github.com/tfgate/tfgate/gateway/exposure"
	"github.com/tfgate/tfgate/gateway/route"
	"github.com/tfgate/tfgate/internal/tensor"
	"github.com/tfgate/tfgate/preprocess"
	tfpb "github.com/tfgate/tfgate/proto/tensorflow"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// Defaults for [Options].
const (
	// DefaultDeadlineMargin is kept back from the caller's remaining deadline for
	// the gateway's own work after the backend answers.
	DefaultDeadlineMargin = 5 * time.Millisecond
	// DefaultWatchInterval is how often the config file is checked for changes.
	DefaultWatchInterval = time.Second
	// DefaultSignatureConcurrency bounds concurrent signature checks.
	DefaultSignatureConcurrency = 4
	// DefaultMaxTopK bounds PredictRequest.top_k.
	DefaultMaxTopK = 1000
	// defaultSignature is what an empty signature_name means.
	defaultSignature = "serving_default"
)

// Options configure a [Server].
type Options struct {
	// ConfigPath is the routing config file. Required.
	ConfigPath string
	// Backends sends calls to TF Serving. Required.
	Backends Backends
	// Specs holds the preprocessing pipelines. Required.
	Specs Specs
	// BackendsReady, when set, is closed once the backends have finished their
	// first full readiness round (hosts.Manager.Ready); Settled waits for it.
	// Nil counts as closed.
	BackendsReady <-chan struct{}
	// Logger; nil discards.
	Logger *slog.Logger
	// MeterProvider; nil is a no-op.
	MeterProvider metric.MeterProvider
	// TracerProvider; nil is a no-op. Predict records the spans tfgate.route,
	// tfgate.preprocess, tfgate.batch_wait (batching) and tfgate.backend; on an
	// ensemble, those of each member under tfgate.ensemble.member, all under
	// tfgate.ensemble.
	TracerProvider trace.TracerProvider
	// Rand drives keyless arm assignment. Default: math/rand/v2.Uint64.
	Rand func() uint64
	// DeadlineMargin is subtracted from the caller's remaining deadline before the
	// backend call. Default: 5ms.
	DeadlineMargin time.Duration
	// WatchInterval is how often the config file's mtime, size and content hash
	// are checked. Default: 1s; negative disables watching (SIGHUP or Reload only).
	WatchInterval time.Duration
	// SignatureConcurrency bounds concurrent GetModelMetadata signature checks.
	// Default: 4.
	SignatureConcurrency int
	// MaxBackendMessageBytes is the backend's message size limit, the bound on a
	// batched request. Default: batching.DefaultMaxMessageBytes.
	MaxBackendMessageBytes int
	// Exposures receives one record per Predict that resolved a version (the
	// exposure log, split monitoring; expose.go). Default: none.
	Exposures exposure.Sink
	// placement: Run sets it when placement is on (--placement). Versions no host
	// has are then the normal state of unplaced models, not versions about to
	// appear, so the builder does not ask readiness to look for them (the
	// placement asks for what it assigns, the cold-start path for what is held).
	placement bool
}

// Server implements tfgate.v1.GatewayService: the request path. Each request
// reads the snapshot its [builder] (the control plane, builder.go) last
// published; the Server itself holds no routing state.
type Server struct {
	tfgatev1.UnimplementedGatewayServiceServer

	opts    Options
	log     *slog.Logger
	codec   *codec
	tracer  trace.Tracer
	stats   counters
	reg     metric.Registration
	builder *builder
	group   *batching.Group
	shadows shadows          // shadow.go
	ens     *ensembleMetrics // ensemble.go
	cold    *coldStart       // with placement on (coldstart.go); nil otherwise
	placer  *placer          // with placement on (placement.go); nil otherwise
}

// New loads and validates the routing config (failing if it is invalid), builds
// the first routing snapshot and returns the server. Call Run to watch for changes.
func New(opts Options) (*Server, error) {
	if opts.ConfigPath == "" || opts.Backends == nil || opts.Specs == nil {
		return nil, errors.New("gateway: Options.ConfigPath, Backends and Specs are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.DeadlineMargin == 0 {
		opts.DeadlineMargin = DefaultDeadlineMargin
	}
	if opts.WatchInterval == 0 {
		opts.WatchInterval = DefaultWatchInterval
	}
	if opts.SignatureConcurrency <= 0 {
		opts.SignatureConcurrency = DefaultSignatureConcurrency
	}
	s := &Server{
		opts:  opts,
		log:   opts.Logger,
		codec: newCodec(),
	}
	if opts.TracerProvider == nil {
		opts.TracerProvider = tracenoop.NewTracerProvider()
	}
	s.opts.TracerProvider = opts.TracerProvider
	s.tracer = opts.TracerProvider.Tracer("github.com/tfgate/tfgate/gateway")
	s.group = batching.NewGroup(s.invokeBackend, batching.Options{
		Logger: opts.Logger, MeterProvider: opts.MeterProvider, TracerProvider: opts.TracerProvider, MaxMessageBytes: opts.MaxBackendMessageBytes,
	})
	s.builder = newBuilder(s.opts, &s.stats, s.group.Retain)
	reg, err := s.stats.register(opts.MeterProvider)
	if err == nil {
		s.ens, err = newEnsembleMetrics(opts.MeterProvider)
	}
	if err != nil {
		return nil, fmt.Errorf("gateway: metrics: %w", err)
	}
	s.reg = reg
	if err := s.builder.reload(); err != nil {
		_ = reg.Unregister()
		return nil, err
	}
	return s, nil
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats { return s.stats.stats() }

// Close flushes the batchers (after the gRPC server stopped taking requests) and
// unregisters metrics.
func (s *Server) Close(ctx context.Context) error {
	err := errors.Join(s.group.Close(ctx), s.shadows.close(ctx))
	if uerr := s.reg.Unregister(); err == nil {
		err = uerr
	}
	return err
}

// Predict serves one typed or raw prediction request.
func (s *Server) Predict(ctx context.Context, req *tfgatev1.PredictRequest) (*tfgatev1.PredictResponse, error) {
	return s.serve(ctx, req, nil, false, nil)
}

// serve is Predict for a request from [predictHandler]: its raw_inputs may be
// kept encoded (raw, else nil), its response goes out through [codec] (wire:
// raw_outputs may be passed on encoded, as unknown fields of the response), and
// it may have failed to decode (decodeErr).
func (s *Server) serve(ctx context.Context, req *tfgatev1.PredictRequest, raw *wireTensors, wire bool, decodeErr error) (*tfgatev1.PredictResponse, error) {
	snap := s.builder.current() // one snapshot for the whole request
	if e, ok := snap.routes.Ensemble(req.GetModel()); ok && decodeErr == nil {
		return s.serveEnsemble(ctx, snap, req, raw, e) // ensemble.go
	}
	var x exposed
	x.start(s)
	resp, err := s.predict(ctx, snap, req, raw, wire, decodeErr, &x.route)
	if err != nil {
		st := toStatus(err)
		s.stats.request(status.Code(st))
		x.done(ctx, s, req, status.Code(st))
		return nil, st
	}
	s.stats.request(0)
	x.done(ctx, s, req, 0)
	return resp, nil
}

// predict serves req from snap; once the target resolves it sets *out to the
// route. An ensemble's members each go through it (ensemble.go).
func (s *Server) predict(ctx context.Context, snap *snapshot, req *tfgatev1.PredictRequest, raw *wireTensors, wire bool, decodeErr error, out *route.Route) (*tfgatev1.PredictResponse, error) {
	if err := decodeErr; err != nil {
		return nil, badRequest("the request could not be decoded (%v); every string field (model, label, routing_key, text, feature names and values) must be valid UTF-8 — send arbitrary bytes as a DT_STRING tensor in raw_inputs", err)
	}
	cfg := snap.routes.Config
	if err := checkRequest(req, raw, cfg.Limits); err != nil {
		return nil, err
	}
	_, span := s.tracer.Start(ctx, "tfgate.route")
	rt, m, err := snap.routes.Resolve(req.GetModel(), target(req), req.GetRoutingKey())
	if span.IsRecording() {
		span.SetAttributes(attribute.String("tfgate.model", req.GetModel()))
		if err == nil {
			span.SetAttributes(attribute.Int64("tfgate.version", rt.Version), attribute.String("tfgate.arm", rt.Arm),
				attribute.String("tfgate.experiment", rt.Experiment), attribute.String("tfgate.route", routeKind(rt.Kind).String()))
		}
	}
	endSpan(span, err)
	if s.cold != nil { // placement on: record demand; hold a request for a cold version
		snap, rt, m, err = s.cold.admit(ctx, snap, req, rt, m, err)
	}
	if err != nil {
		return nil, err
	}
	*out = rt
	if rt.Kind == route.KindExperiment {
		snap.countArm(m.Name, rt) // the status page's observed split
	}
	sigName := req.GetSignatureName()
	if sigName == "" {
		sigName = defaultSignature
	}
	// at names the model and version in every error (formatted only on error).
	at := func(err error) error { return fmt.Errorf("model %q version %d: %w", m.Name, rt.Version, err) }

	var pipe *preprocess.Pipeline
	inputs := req.GetRawInputs()
	if len(req.GetInstances()) > 0 {
		pipe, err = s.pipeline(snap, m, rt.Version)
		if err != nil {
			return nil, at(err)
		}
		_, span := s.tracer.Start(ctx, "tfgate.preprocess", trace.WithAttributes(
			attribute.String("tfgate.model", m.Name), attribute.Int64("tfgate.version", rt.Version), attribute.Int("tfgate.instances", len(req.GetInstances()))))
		inputs, err = pipe.Encode(req.GetInstances())
		endSpan(span, err)
		if err != nil {
			return nil, at(err)
		}
	}

	breq := newBackendRequest(m.Name, rt.Version, sigName, inputs)
	if raw != nil {
		setInputs(breq, raw) // the caller's tensors as they arrived
	}
	// The one call site where a fully built, version-pinned request leaves for
	// the backends (through the model's batcher when batching is on).
	bresp, err := s.callBackend(ctx, m, breq)
	if err != nil && s.cold != nil { // placement on: were its hosts lost under the call?
		if failed, ok := s.cold.lost(ctx, err); ok {
			if err = s.cold.rewait(ctx, m, rt.Version, pipe != nil, failed); err == nil {
				bresp, err = s.callBackend(ctx, m, breq)
			}
		}
	}
	if err != nil {
		return nil, at(err)
	}
	if got := bresp.GetModelSpec().GetVersion(); got == nil || got.GetValue() != rt.Version {
		s.stats.mismatches.Add(1)
		s.log.ErrorContext(ctx, "gateway: backend answered for another version", "model", m.Name, "pinned", rt.Version, "answered", got.GetValue())
		return nil, at(fmt.Errorf("%w: the response names version %d (model %q); the prediction was discarded", ErrVersionMismatch, got.GetValue(), bresp.GetModelSpec().GetName()))
	}

	resp := &tfgatev1.PredictResponse{
		Model:      m.Name,
		Version:    rt.Version,
		Arm:        rt.Arm,
		Experiment: rt.Experiment,
		Route:      routeKind(rt.Kind),
	}
	switch {
	case pipe != nil:
		if err := decodeOutputs(bresp); err != nil {
			return nil, at(err)
		}
		preds, err := pipe.Decode(bresp.GetOutputs(), len(req.GetInstances()), int(req.GetTopK()))
		if err != nil {
			return nil, at(err)
		}
		resp.Predictions = preds
	case wire: // the backend's tensors go out as they came in
		resp.RawOutputs = bresp.GetOutputs()
		if recs := takeOutputs(bresp, fieldRawOutputs); recs != nil {
			resp.ProtoReflect().SetUnknown(recs)
		}
	default:
		if err := decodeOutputs(bresp); err != nil {
			return nil, at(err)
		}
		resp.RawOutputs = bresp.GetOutputs()
	}
	s.shadows.maybe(ctx, s, snap, m, rt, req, resp, sigName) // after the primary answered; never waits
	return resp, nil
}

// pipeline returns the signature-checked pipeline of a version, or why there is none.
func (s *Server) pipeline(snap *snapshot, m *route.ModelRoutes, v int64) (*preprocess.Pipeline, error) {
	if c, ok := snap.pipes[vkey{m.Name, v}]; ok {
		// The checked spec's pipeline, from the store's cache or compiled now.
		p, err := s.opts.Specs.Pipeline(m.Name, v, c.hash)
		if err == nil {
			return p, nil
		}
		s.builder.triggerRebuild() // replaced on disk since its check, or unreadable
		return nil, fmt.Errorf("%w: the checked spec could not be loaded (%v); retry in a moment", ErrSpecPending, err)
	}
	if _, ok := s.opts.Specs.SpecHash(m.Name, v); !ok {
		err := s.opts.Specs.Err(m.Name, v)
		if err == nil {
			err = preprocess.ErrNoSpec
		}
		if errors.Is(err, preprocess.ErrVersionNotFound) && len(s.opts.Backends.AvailableHosts(m.Name, v, m.Pools)) == 0 {
			return nil, fmt.Errorf("%w: no version directory under the model root and no host in pools [%s] reports it AVAILABLE; ListRoutes lists the routable versions", ErrVersionNotServed, strings.Join(m.Pools, ", "))
		}
		return nil, fmt.Errorf("%w: %v; typed instances need the version's assets.extra/tfgate-preprocess.json (send raw_inputs to bypass preprocessing)", ErrNoSpec, err)
	}
	if err := s.builder.sig.lastErr(vkey{m.Name, v}); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoSpec, err)
	}
	if len(s.opts.Backends.AvailableHosts(m.Name, v, m.Pools)) == 0 {
		return nil, fmt.Errorf("%w: its spec is loaded, but no host in pools [%s] reports it AVAILABLE; ListRoutes lists the routable versions", ErrVersionNotServed, strings.Join(m.Pools, ", "))
	}
	s.builder.triggerRebuild() // a check may have finished since the snapshot
	return nil, fmt.Errorf("%w; retry in a moment", ErrSpecPending)
}

// callBackend sends breq through the model's batcher (or straight to its
// pools) bounded by [Server.backendContext].
func (s *Server) callBackend(ctx context.Context, m *route.ModelRoutes, breq *servingpb.PredictRequest) (*servingpb.PredictResponse, error) {
	ctx, cancel, err := s.backendContext(ctx, m.Timeout)
	if err != nil {
		return nil, err
	}
	defer cancel()
	if !m.Batching.Enabled {
		return s.invokeBackend(ctx, m.Pools, breq) // raw outputs may stay encoded
	}
	// The batcher concatenates kept inputs and splits kept outputs as wire
	// bytes, and decodes what it cannot (batching/wire.go); outputs may come
	// back kept either way.
	return s.group.Do(ctx, m.Batching, m.Pools, breq)
}

// backendContext bounds the backend call by the model's timeout and the caller's
// deadline minus the margin.
func (s *Server) backendContext(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc, error) {
	d := timeout
	if dl, ok := ctx.Deadline(); ok {
		rem := time.Until(dl) - s.opts.DeadlineMargin
		if rem <= 0 {
			return nil, nil, fmt.Errorf("%w: %v left of the caller's deadline, which does not cover the gateway's %v margin; allow more time", ErrDeadlineTooShort, time.Until(dl).Round(time.Microsecond), s.opts.DeadlineMargin)
		}
		if rem < d {
			d = rem
		}
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	return ctx, cancel, nil
}

// backendRequest is a backend PredictRequest and its pinned model spec in one
// allocation instead of four.
type backendRequest struct {
	req     servingpb.PredictRequest
	spec    servingpb.ModelSpec
	choice  servingpb.ModelSpec_Version
	version wrapperspb.Int64Value
}

// newBackendRequest is the PredictRequest for version v of model, pinned.
func newBackendRequest(model string, v int64, sig string, inputs map[string]*tfpb.TensorProto) *servingpb.PredictRequest {
	b := new(backendRequest)
	b.version.Value = v
	b.choice.Version = &b.version
	b.spec.Name, b.spec.VersionChoice, b.spec.SignatureName = model, &b.choice, sig
	b.req.ModelSpec, b.req.Inputs = &b.spec, inputs
	return &b.req
}

// invokeDecoded is invokeBackend with the response's outputs decoded (shadow
// traffic compares them).
func (s *Server) invokeDecoded(ctx context.Context, pools []string, req *servingpb.PredictRequest) (*servingpb.PredictResponse, error) {
	resp, err := s.invokeBackend(ctx, pools, req)
	if err == nil {
		err = decodeOutputs(resp)
	}
	return resp, err
}

// invokeBackend sends every backend Predict (batched ones too: it is the
// batchers' invoke). The response's outputs may be kept encoded ([backendCodec]).
func (s *Server) invokeBackend(ctx context.Context, pools []string, req *servingpb.PredictRequest) (*servingpb.PredictResponse, error) {
	ctx, span := s.tracer.Start(ctx, "tfgate.backend", trace.WithSpanKind(trace.SpanKindInternal))
	if span.IsRecording() {
		span.SetAttributes(attribute.String("tfgate.model", req.GetModelSpec().GetName()),
			attribute.Int64("tfgate.version", req.GetModelSpec().GetVersion().GetValue()),
			attribute.StringSlice("tfgate.pools", pools), attribute.Int64("tfgate.batch.rows", batchRows(req)))
	}
	resp, host, err := s.opts.Backends.Predict(ctx, pools, req)
	if span.IsRecording() { // the variadic attributes would escape even into a no-op span
		span.SetAttributes(attribute.String("tfgate.host", host))
	}
	if err != nil {
		// The host stays here and in the span; the caller's message leaves it out.
		s.log.DebugContext(ctx, "gateway: backend call failed", "host", host, "err", err)
	}
	endSpan(span, err)
	return resp, err
}

// batchRows is the size of dimension 0 of req's first input (its row count).
func batchRows(req *servingpb.PredictRequest) int64 {
	if recs := tensor.KeptRecords(req.ProtoReflect(), fieldInputs); recs != nil {
		var ts []wireTensor
		if _, _, ok := scanTensorMap(recs, fieldInputs, nil, &ts, nil); ok && len(ts) > 0 {
			rows, _ := ts[0].hdr.Rows()
			return rows
		}
	}
	for _, t := range req.GetInputs() {
		if dims, err := tensor.Dims(t); err == nil && len(dims) > 0 {
			return dims[0]
		}
		break
	}
	return 0
}

// endSpan records err (if any) on span and ends it.
func endSpan(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		span.RecordError(err)
		span.SetStatus(otelcodes.Error, err.Error())
	}
	span.End()
}

func target(req *tfgatev1.PredictRequest) route.Target {
	switch t := req.GetTarget().(type) {
	case *tfgatev1.PredictRequest_Version:
		return route.Target{Version: t.Version}
	case *tfgatev1.PredictRequest_Label:
		return route.Target{Label: t.Label}
	}
	return route.Target{}
}

func routeKind(k route.Kind) tfgatev1.RouteKind {
	switch k {
	case route.KindVersion:
		return tfgatev1.RouteKind_ROUTE_KIND_VERSION
	case route.KindLabel:
		return tfgatev1.RouteKind_ROUTE_KIND_LABEL
	case route.KindExperiment:
		return tfgatev1.RouteKind_ROUTE_KIND_EXPERIMENT
	case route.KindDefault:
		return tfgatev1.RouteKind_ROUTE_KIND_DEFAULT
	}
	return tfgatev1.RouteKind_ROUTE_KIND_UNSPECIFIED
}

// checkRequest validates what does not depend on the version's spec.
func checkRequest(req *tfgatev1.PredictRequest, raw *wireTensors, lim route.Limits) error {
	if req.GetModel() == "" {
		return badRequest("model is required: set it to a model name from the routing config (ListRoutes lists them)")
	}
	switch t := req.GetTarget().(type) {
	case *tfgatev1.PredictRequest_Version:
		if t.Version <= 0 {
			return badRequest("version %d: versions are positive integers; leave version unset for the model's default route", t.Version)
		}
	case *tfgatev1.PredictRequest_Label:
		if t.Label == "" {
			return badRequest("label is set but empty: name a label, or leave the target unset for the model's default route")
		}
	}
	if n := len(req.GetRoutingKey()); n > lim.MaxRoutingKeyBytes {
		return tooLarge("routing_key is %d bytes, at most %d: use a shorter caller or customer id (a hash of it works)", n, lim.MaxRoutingKeyBytes)
	}
	ni, nr := len(req.GetInstances()), len(req.GetRawInputs())+raw.len()
	switch {
	case ni == 0 && nr == 0:
		return badRequest("no instances: send at least one instance (or raw_inputs tensors)")
	case ni > 0 && nr > 0:
		return badRequest("both instances (%d) and raw_inputs (%d) are set: send one or the other", ni, nr)
	case ni > lim.MaxInstances:
		return tooLarge("%d instances, at most %d per request: split the request", ni, lim.MaxInstances)
	}
	if req.GetTopK() > 0 && nr > 0 {
		return badRequest("top_k applies to typed instances; raw_inputs come back as raw_outputs, unranked: drop top_k or send instances")
	}
	if req.GetTopK() > DefaultMaxTopK {
		return tooLarge("top_k is %d, at most %d", req.GetTopK(), DefaultMaxTopK)
	}
	for i, in := range req.GetInstances() {
		if in == nil {
			return badRequest("instance %d is empty", i)
		}
		if n := len(in.GetText()); n > lim.MaxTextBytes {
			return tooLarge("instance %d: text is %d bytes, at most %d: shorten it", i, n, lim.MaxTextBytes)
		}
		if n := len(in.GetNumeric()) + len(in.GetCategorical()); n > lim.MaxFeatures {
			return tooLarge("instance %d: %d features, at most %d", i, n, lim.MaxFeatures)
		}
		if in.GetText() == "" && len(in.GetNumeric()) == 0 && len(in.GetCategorical()) == 0 {
			return badRequest("instance %d is empty: give it text or features", i)
		}
		for name, v := range in.GetNumeric() {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return badRequest("instance %d: numeric feature %q is %v: features must be finite numbers (leave a feature out to use the spec's default)", i, name, v)
			}
		}
	}
	for name, t := range req.GetRawInputs() {
		if err := checkTensor(t); err != nil {
			return badRequest("raw_inputs[%q]: %v", name, err)
		}
	}
	if raw != nil {
		for i := range raw.tensors {
			if err := checkHeader(&raw.tensors[i].hdr); err != nil {
				return badRequest("raw_inputs[%q]: %v", raw.tensors[i].key, err)
			}
		}
	}
	return nil
}

func checkTensor(t *tfpb.TensorProto) error {
	if t == nil {
		return errors.New("tensor is empty")
	}
	h := tensor.HeaderOf(t)
	return checkHeader(&h)
}

// checkHeader checks a raw input from its header alone: what checkTensor checks
// of a decoded one, and all it checks.
func checkHeader(h *tensor.Header) error {
	if h.DType == tfpb.DataType_DT_INVALID {
		return errors.New("dtype is not set: set it (e.g. DT_FLOAT)")
	}
	rank, err := h.Rank()
	if err != nil {
		return err
	}
	if rank == 0 {
		return errors.New("shape has no dimensions: raw inputs are batches, dimension 0 is the batch size")
	}
	if tensor.ElemSize(h.DType) == 0 && h.DType != tfpb.DataType_DT_STRING {
		return nil // a dtype the gateway does not decode: TF Serving checks it
	}
	if _, err := h.Len(); err != nil {
		return fmt.Errorf("%v: send exactly one value per element of the shape", err)
	}
	return nil
}
