package servingsim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tfgate/tfgate/internal/grpcserve"
	"github.com/tfgate/tfgate/internal/servingsim/model"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

// Server is a TF-Serving-compatible model server. Create it with New, run it with
// Serve; it is safe for concurrent use.
type Server struct {
	cfg      Config
	log      *slog.Logger
	batching *BatchingParameters
	metrics  *metrics

	mu  sync.Mutex
	mgr *manager // set by Serve
	// ready is closed once Serve has loaded the startup config.
	ready chan struct{}
}

// New validates cfg and reads its files (the model config and batching
// parameters), so a bad configuration fails before anything listens.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Server{cfg: cfg, log: log, ready: make(chan struct{}), metrics: newMetrics()}
	if len(cfg.IgnoredFlags) > 0 {
		log.Warn("TF Serving flags accepted but not simulated", "flags", cfg.IgnoredFlags)
	}
	if cfg.EnableBatching {
		p := DefaultBatchingParameters()
		if cfg.BatchingParametersFile != "" {
			b, err := readFileLimited(cfg.BatchingParametersFile)
			if err != nil {
				return nil, fmt.Errorf("%w: --batching_parameters_file: %w", ErrConfig, err)
			}
			if p, err = ParseBatchingParameters(b); err != nil {
				return nil, err
			}
		}
		s.batching = &p
	}
	if _, err := s.startupConfig(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Server) startupConfig() (*servingpb.ModelServerConfig, error) {
	if s.cfg.ModelConfigFile == "" {
		return singleModelConfig(s.cfg.ModelName, s.cfg.ModelBasePath), nil
	}
	b, err := readFileLimited(s.cfg.ModelConfigFile)
	if err != nil {
		return nil, fmt.Errorf("%w: --model_config_file: %w", ErrConfig, err)
	}
	c, err := ParseModelServerConfig(b)
	if err != nil {
		return nil, fmt.Errorf("--model_config_file %s: %w", s.cfg.ModelConfigFile, err)
	}
	return c, nil
}

// Run listens on cfg.Host:cfg.Port and serves until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	s, err := New(cfg)
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)))
	if err != nil {
		return err
	}
	return s.Serve(ctx, lis)
}

// Ready is closed once the startup config is loaded and the server answers.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Serve loads the startup config (one synchronous poll of every model, so versions
// present on disk are AVAILABLE before the first request), then serves gRPC on lis
// until ctx ends; it then stops accepting, lets in-flight calls finish (up to 5 s),
// stops pollers and batchers, and returns nil. It closes lis. Call it once.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	mgr := newManager(ctx, s.cfg, s.batching, s.log)
	s.mu.Lock()
	if s.mgr != nil {
		s.mu.Unlock()
		lis.Close()
		return errors.New("servingsim: Serve called twice")
	}
	s.mgr = mgr
	s.mu.Unlock()
	defer mgr.shutdown()

	cfg, err := s.startupConfig()
	if err != nil {
		lis.Close()
		return err
	}
	err = mgr.reload(ctx, cfg, true)
	if err == nil {
		err = mgr.startupCheck()
	}
	if err != nil {
		lis.Close()
		c, msg := codeOf(err)
		return fmt.Errorf("Failed to start server. Error: %s: %s", tfCodeName(c), msg)
	}

	recv, send := s.cfg.MaxReceiveMessageSize, s.cfg.MaxSendMessageSize
	if r, sn, _ := parseChannelArgs(s.cfg.GRPCChannelArguments); r > 0 || sn > 0 {
		recv, send = cmpOr(r, recv), cmpOr(sn, send)
	}
	opts := []grpc.ServerOption{grpc.MaxRecvMsgSize(recv), grpc.MaxSendMsgSize(send)}
	opts = append(opts, s.cfg.ServerOptions...)
	if n := s.cfg.GRPCMaxThreads; n > 0 {
		sem := make(chan struct{}, n)
		opts = append(opts, grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			rel, err := acquire(ctx, sem)
			if err != nil {
				return nil, toStatus(err)
			}
			defer rel()
			return h(ctx, req)
		}))
	}
	gs := grpc.NewServer(opts...)
	servingpb.RegisterPredictionServiceServer(gs, &predictionService{s: s, m: mgr})
	servingpb.RegisterModelServiceServer(gs, &modelService{s: s, m: mgr})
	reflection.Register(gs) // for grpcurl; TF Serving has none, clients cannot tell
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("tensorflow.serving.PredictionService", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("tensorflow.serving.ModelService", healthpb.HealthCheckResponse_SERVING)

	var wg sync.WaitGroup
	if s.cfg.ModelConfigFile != "" && s.cfg.ModelConfigFilePollWait > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.pollConfigFile(ctx, mgr, cfg)
		}()
	}
	if s.cfg.RESTAPIPort > 0 {
		stopREST, err := s.startREST(ctx, mgr)
		if err != nil {
			lis.Close()
			cancel()
			wg.Wait()
			return err
		}
		defer stopREST()
	}
	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(lis) }()
	close(s.ready)
	s.log.Info("running gRPC ModelServer", "addr", lis.Addr().String())

	select {
	case err = <-errc:
		cancel()
	case <-ctx.Done():
		hs.Shutdown()
		grpcserve.Stop(gs, 5*time.Second)
		err = <-errc
		if errors.Is(err, grpc.ErrServerStopped) {
			err = nil
		}
	}
	wg.Wait()
	return err
}

func cmpOr(a, b int) int {
	if a > 0 {
		return a
	}
	return b
}

// Stats returns execution counters (zero before Serve).
func (s *Server) Stats() Stats {
	s.mu.Lock()
	mgr := s.mgr
	s.mu.Unlock()
	if mgr == nil {
		return Stats{}
	}
	return Stats{Executions: mgr.stats.executions.Load(), Rows: mgr.stats.rows.Load()}
}

// Reload applies a ModelServerConfig as HandleReloadConfigRequest does.
func (s *Server) Reload(ctx context.Context, cfg *servingpb.ModelServerConfig) error {
	s.mu.Lock()
	mgr := s.mgr
	s.mu.Unlock()
	if mgr == nil {
		return errors.New("servingsim: Reload before Serve")
	}
	return mgr.reload(ctx, cfg, false)
}

// pollConfigFile re-reads --model_config_file and applies it when it differs from
// last, the config applied before (at start: the one the server started with, so
// an edit made between start and the first poll is not mistaken for the baseline).
func (s *Server) pollConfigFile(ctx context.Context, mgr *manager, last *servingpb.ModelServerConfig) {
	t := time.NewTicker(s.cfg.ModelConfigFilePollWait)
	defer t.Stop()
	lastText := "" // the text last parsed; the first poll always parses
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		b, err := readFileLimited(s.cfg.ModelConfigFile)
		if err != nil {
			s.log.Error("could not read model config file", "path", s.cfg.ModelConfigFile, "err", err)
			continue
		}
		if string(b) == lastText {
			continue
		}
		lastText = string(b)
		c, err := ParseModelServerConfig(b)
		if err != nil {
			s.log.Error("model config file is invalid; keeping the current config", "path", s.cfg.ModelConfigFile, "err", err)
			continue
		}
		if proto.Equal(c, last) {
			continue
		}
		last = c
		if err := mgr.reload(ctx, c, false); err != nil {
			s.log.Error("reloading model config file failed", "path", s.cfg.ModelConfigFile, "err", err)
		}
	}
}

type predictionService struct {
	servingpb.UnimplementedPredictionServiceServer
	s *Server
	m *manager
}

type modelService struct {
	servingpb.UnimplementedModelServiceServer
	s *Server
	m *manager
}

func specOut(v *version, signature string) *servingpb.ModelSpec {
	return &servingpb.ModelSpec{Name: v.name, VersionChoice: &servingpb.ModelSpec_Version{Version: wrapperspb.Int64(v.num)}, SignatureName: signature}
}

// Predict implements TF Serving's Predict.
func (p *predictionService) Predict(ctx context.Context, req *servingpb.PredictRequest) (*servingpb.PredictResponse, error) {
	start := time.Now()
	resp, err := p.predict(ctx, req)
	c, _ := codeOf(err)
	p.s.metrics.record(req.GetModelSpec().GetName(), "predict", "GRPC", c, time.Since(start))
	return resp, toStatus(err)
}

func (p *predictionService) predict(ctx context.Context, req *servingpb.PredictRequest) (*servingpb.PredictResponse, error) {
	v, err := p.m.resolve(req.GetModelSpec())
	if err != nil {
		return nil, err
	}
	sigName := req.GetModelSpec().GetSignatureName()
	if sigName == "" {
		sigName = model.DefaultSignature
	}
	sig := v.model.Signatures()[sigName]
	if sig == nil {
		return nil, tfErr(codes.FailedPrecondition, "Serving signature key \"%s\" not found.", sigName)
	}
	if len(req.GetInputs()) != len(sig.GetInputs()) {
		reqNames := slices.Sorted(maps.Keys(req.GetInputs()))
		sigNames := slices.Sorted(maps.Keys(sig.GetInputs()))
		var extra, missing []string
		for _, n := range reqNames {
			if sig.GetInputs()[n] == nil {
				extra = append(extra, n)
			}
		}
		for _, n := range sigNames {
			if _, ok := req.GetInputs()[n]; !ok {
				missing = append(missing, n)
			}
		}
		return nil, tfErr(codes.InvalidArgument, "input size does not match signature: %d!=%d len({%s}) != len({%s}). Sent extra: {%s}. Missing but required: {%s}.",
			len(reqNames), len(sigNames), strings.Join(reqNames, ","), strings.Join(sigNames, ","), strings.Join(extra, ","), strings.Join(missing, ","))
	}
	for _, n := range slices.Sorted(maps.Keys(req.GetInputs())) {
		if sig.GetInputs()[n] == nil {
			return nil, tfErr(codes.InvalidArgument, "input tensor alias not found in signature: %s. Inputs expected to be in the set {%s}.", n, strings.Join(slices.Sorted(maps.Keys(sig.GetInputs())), ","))
		}
	}
	var outputs []string
	seen := map[string]bool{}
	for _, alias := range req.GetOutputFilter() {
		if sig.GetOutputs()[alias] == nil {
			return nil, tfErr(codes.InvalidArgument, "output tensor alias not found in signature: %s Outputs expected to be in the set {%s}.", alias, strings.Join(slices.Sorted(maps.Keys(sig.GetOutputs())), ","))
		}
		if seen[alias] {
			return nil, tfErr(codes.InvalidArgument, "duplicate output tensor alias: %s", alias)
		}
		seen[alias] = true
		outputs = append(outputs, alias)
	}
	if len(outputs) == 0 {
		outputs = slices.Sorted(maps.Keys(sig.GetOutputs()))
	}
	in, err := v.model.Decode(sig, req.GetInputs(), v.batcher != nil)
	if err != nil {
		return nil, err
	}
	var res *model.Result
	start := 0
	if v.batcher != nil {
		res, start, err = v.batcher.submit(ctx, in)
	}
	if v.batcher == nil || errors.Is(err, errClosed) {
		res, err = v.exec.run(ctx, in.Rows, func() (*model.Result, error) { return v.model.Run(in) })
	}
	if err != nil {
		return nil, err
	}
	return &servingpb.PredictResponse{ModelSpec: specOut(v, sigName), Outputs: res.Tensors(start, in.Rows, outputs)}, nil
}

// GetModelMetadata implements TF Serving's GetModelMetadata (signature_def only).
func (p *predictionService) GetModelMetadata(ctx context.Context, req *servingpb.GetModelMetadataRequest) (*servingpb.GetModelMetadataResponse, error) {
	resp, err := p.metadata(req)
	return resp, toStatus(err)
}

func (p *predictionService) metadata(req *servingpb.GetModelMetadataRequest) (*servingpb.GetModelMetadataResponse, error) {
	if req.GetModelSpec() == nil {
		return nil, tfErr(codes.InvalidArgument, "Missing ModelSpec")
	}
	if len(req.GetMetadataField()) == 0 {
		return nil, tfErr(codes.InvalidArgument, "GetModelMetadataRequest must specify at least one metadata_field")
	}
	for _, f := range req.GetMetadataField() {
		if f != "signature_def" {
			return nil, tfErr(codes.InvalidArgument, "Metadata field %s is not supported", f)
		}
	}
	v, err := p.m.resolve(req.GetModelSpec())
	if err != nil {
		return nil, err
	}
	a, err := anypb.New(&servingpb.SignatureDefMap{SignatureDef: v.model.Signatures()})
	if err != nil {
		return nil, err
	}
	return &servingpb.GetModelMetadataResponse{ModelSpec: specOut(v, ""), Metadata: map[string]*anypb.Any{"signature_def": a}}, nil
}

// Classify answers as TF Serving does for a model whose signatures are all predict
// signatures.
func (p *predictionService) Classify(ctx context.Context, req *servingpb.ClassificationRequest) (*servingpb.ClassificationResponse, error) {
	return nil, toStatus(p.wrongMethod(req.GetModelSpec(), "classification", "tensorflow/serving/classify"))
}

// Regress: see Classify.
func (p *predictionService) Regress(ctx context.Context, req *servingpb.RegressionRequest) (*servingpb.RegressionResponse, error) {
	return nil, toStatus(p.wrongMethod(req.GetModelSpec(), "regression", "tensorflow/serving/regress"))
}

func (p *predictionService) wrongMethod(spec *servingpb.ModelSpec, what, method string) error {
	v, err := p.m.resolve(spec)
	if err != nil {
		return err
	}
	sigName := spec.GetSignatureName()
	if sigName == "" {
		sigName = model.DefaultSignature
	}
	sig := v.model.Signatures()[sigName]
	if sig == nil {
		return tfErr(codes.InvalidArgument, "No signature was found with the name: %s", sigName)
	}
	return tfErr(codes.InvalidArgument, "Expected %s signature method_name to be %s. Was: %s", what, method, sig.GetMethodName())
}

// MultiInference: the simulator's models have only predict signatures, which
// MultiInference does not run.
func (p *predictionService) MultiInference(ctx context.Context, req *servingpb.MultiInferenceRequest) (*servingpb.MultiInferenceResponse, error) {
	if len(req.GetTasks()) == 0 {
		return nil, toStatus(tfErr(codes.InvalidArgument, "Inference request should have at least one task"))
	}
	for _, t := range req.GetTasks() {
		if _, err := p.m.resolve(t.GetModelSpec()); err != nil {
			return nil, toStatus(err)
		}
		switch t.GetMethodName() {
		case "tensorflow/serving/classify", "tensorflow/serving/regress":
			return nil, toStatus(p.wrongMethod(t.GetModelSpec(), map[string]string{"tensorflow/serving/classify": "classification", "tensorflow/serving/regress": "regression"}[t.GetMethodName()], t.GetMethodName()))
		default:
			return nil, toStatus(tfErr(codes.Unimplemented, "Unsupported signature method_name: %s", t.GetMethodName()))
		}
	}
	return nil, nil
}

// GetModelStatus implements TF Serving's GetModelStatus.
func (ms *modelService) GetModelStatus(ctx context.Context, req *servingpb.GetModelStatusRequest) (*servingpb.GetModelStatusResponse, error) {
	resp, err := ms.m.status(req.GetModelSpec())
	return resp, toStatus(err)
}

// HandleReloadConfigRequest implements TF Serving's config reload: on failure the
// error is both the RPC status and the response status, as in TF Serving.
func (ms *modelService) HandleReloadConfigRequest(ctx context.Context, req *servingpb.ReloadConfigRequest) (*servingpb.ReloadConfigResponse, error) {
	var err error
	if req.GetConfig().GetModelConfigList() == nil {
		err = tfErr(codes.InvalidArgument, "ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList is currently supported")
	} else {
		err = ms.m.reload(ctx, req.GetConfig(), false)
	}
	if err != nil {
		ms.s.log.Error("HandleReloadConfigRequest failed", "err", err)
		return nil, toStatus(err)
	}
	return &servingpb.ReloadConfigResponse{Status: statusProto(nil)}, nil
}
