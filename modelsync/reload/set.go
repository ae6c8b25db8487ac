package reload

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/tfgate/tfgate/internal/atomicfile"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

// Model is one entry of an exact model set: a model and the versions TF Serving
// should load, no others.
type Model struct {
	Name     string
	Versions []int64
}

// ExactConfig is the ModelServerConfig that serves exactly models: one entry per
// model, sorted by name, base_path <base>/<model>, platform "tensorflow", and a
// specific version policy naming the versions in ascending order, so a version
// on disk but not named (a cached, unassigned one) is not loaded. Models with no
// versions are left out (TF Serving would wait for one forever).
func ExactConfig(base string, models []Model) *servingpb.ModelServerConfig {
	ms := slices.Clone(models)
	slices.SortFunc(ms, func(a, b Model) int { return strings.Compare(a.Name, b.Name) })
	list := &servingpb.ModelConfigList{}
	for _, m := range ms {
		vs := slices.Clone(m.Versions)
		slices.Sort(vs)
		vs = slices.Compact(vs)
		if len(vs) == 0 {
			continue
		}
		list.Config = append(list.Config, &servingpb.ModelConfig{
			Name:          m.Name,
			BasePath:      filepath.Join(base, m.Name),
			ModelPlatform: "tensorflow",
			ModelVersionPolicy: &servingpb.FileSystemStoragePathSourceConfig_ServableVersionPolicy{
				PolicyChoice: &servingpb.FileSystemStoragePathSourceConfig_ServableVersionPolicy_Specific_{
					Specific: &servingpb.FileSystemStoragePathSourceConfig_ServableVersionPolicy_Specific{Versions: vs}}},
		})
	}
	return &servingpb.ModelServerConfig{Config: &servingpb.ModelServerConfig_ModelConfigList{ModelConfigList: list}}
}

// Set makes TF Serving serve exactly models (ExactConfig): it sends the whole
// config with HandleReloadConfigRequest and, once TF Serving accepted it,
// rewrites the model config file. Models absent from models are removed (TF
// Serving unloads them in the background); version labels are not written (in
// placement mode the gateway resolves labels to numbers, and TF Serving refuses a
// label on a version that is still loading).
//
// TF Serving's reload returns only once newly added models are AVAILABLE and may
// never return for one that cannot load: ctx must carry a deadline. A failed or
// timed-out reload leaves the file as it was and forgets what TF Serving holds,
// so the next Set sends its config again (for TF Serving the models are no longer
// new then, and the call returns at once). A Set whose config equals the last one
// TF Serving accepted sends nothing and returns false.
func (r *Reloader) Set(ctx context.Context, models []Model) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cfg := ExactConfig(r.base, models)
	if r.applied != nil && proto.Equal(r.applied, cfg) {
		return false, nil
	}
	r.applied = nil
	resp, err := r.client.HandleReloadConfigRequest(ctx, &servingpb.ReloadConfigRequest{Config: cfg})
	if err != nil {
		return true, fmt.Errorf("reload TF Serving config with %d models: %w", len(cfg.GetModelConfigList().GetConfig()), err)
	}
	if st := resp.GetStatus(); st != nil && st.GetErrorCode() != 0 {
		return true, fmt.Errorf("%w: %v: %s", ErrRefused, st.GetErrorCode(), st.GetErrorMessage())
	}
	b, err := prototext.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(cfg)
	if err != nil {
		return true, err
	}
	if err := atomicfile.Write(r.file, b, 0o644, true); err != nil {
		return true, fmt.Errorf("rewrite model config file: %w", err)
	}
	r.applied = cfg
	return true, nil
}
