package reload

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/prototext"

	"github.com/tfgate/tfgate/internal/atomicfile"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

// ErrRefused: TF Serving answered the reload with a non-OK status.
var ErrRefused = errors.New("TF Serving refused the model config")

// Client is the RPC this package makes (same signature as servingpb.ModelServiceClient).
type Client interface {
	HandleReloadConfigRequest(ctx context.Context, in *servingpb.ReloadConfigRequest, opts ...grpc.CallOption) (*servingpb.ReloadConfigResponse, error)
}

var _ Client = servingpb.ModelServiceClient(nil)

// Reloader keeps one TF Serving host's model list in step with the base path.
type Reloader struct {
	client Client
	file   string
	base   string
	mu     sync.Mutex
	// applied is the config TF Serving last accepted from Set; nil when unknown.
	applied *servingpb.ModelServerConfig
}

// New returns a Reloader writing file and naming models under base (absolute).
func New(client Client, file, base string) (*Reloader, error) {
	abs, err := filepath.Abs(base)
	if err != nil {
		return nil, err
	}
	return &Reloader{client: client, file: file, base: abs}, nil
}

// ReadConfig parses a text-format ModelServerConfig; a missing file is an empty list.
func ReadConfig(file string) (*servingpb.ModelServerConfig, error) {
	cfg := &servingpb.ModelServerConfig{}
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return cfg, nil
	}
	if err != nil {
		return nil, err
	}
	if err := prototext.Unmarshal(b, cfg); err != nil {
		return nil, fmt.Errorf("model config file %s: %w", file, err)
	}
	if cfg.GetConfig() != nil && cfg.GetModelConfigList() == nil {
		return nil, fmt.Errorf("model config file %s: only model_config_list is supported", file)
	}
	return cfg, nil
}

// Ensure makes sure model is in TF Serving's config, reloading it when it is not. It
// returns whether a reload happened.
func (r *Reloader) Ensure(ctx context.Context, model string) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cfg, err := ReadConfig(r.file)
	if err != nil {
		return false, err
	}
	list := cfg.GetModelConfigList()
	if list == nil {
		list = &servingpb.ModelConfigList{}
	}
	for _, mc := range list.GetConfig() {
		if mc.GetName() == model {
			return false, nil
		}
	}
	list.Config = append(list.Config, &servingpb.ModelConfig{
		Name:          model,
		BasePath:      filepath.Join(r.base, model),
		ModelPlatform: "tensorflow",
	})
	cfg.Config = &servingpb.ModelServerConfig_ModelConfigList{ModelConfigList: list}
	resp, err := r.client.HandleReloadConfigRequest(ctx, &servingpb.ReloadConfigRequest{Config: cfg})
	if err != nil {
		return false, fmt.Errorf("reload TF Serving config with model %q: %w", model, err)
	}
	if st := resp.GetStatus(); st != nil && st.GetErrorCode() != 0 {
		return false, fmt.Errorf("%w: adding %q: %v: %s", ErrRefused, model, st.GetErrorCode(), st.GetErrorMessage())
	}
	b, err := prototext.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(cfg)
	if err != nil {
		return true, err
	}
	if err := atomicfile.Write(r.file, b, 0o644, true); err != nil {
		return true, fmt.Errorf("rewrite model config file: %w", err)
	}
	r.applied = nil // Ensure's config is not Set's
	return true, nil
}
