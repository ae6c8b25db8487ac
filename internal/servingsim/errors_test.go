package servingsim_test

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/tfgate/tfgate/internal/servingsim"
	"github.com/tfgate/tfgate/internal/tensor"
	tfpb "github.com/tfgate/tfgate/proto/tensorflow"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

func ids(t *testing.T, rows int, vals ...int64) *tfpb.TensorProto {
	return must(tensor.FromInt64(vals, int64(rows), int64(len(vals)/rows)))
}

// TestErrorTable covers every row of TF Serving's error table
// (shared/design/tfserving-api.md) and the other request errors TF Serving
// reports, over real TCP, with exact codes and messages.
func TestErrorTable(t *testing.T) {
	lin, txt := t.TempDir(), t.TempDir()
	export(t, lin, 1, linearSpec(1))
	export(t, txt, 3, textSpec(3))
	c := start(t, func(cfg *servingsim.Config) { cfg.ModelName, cfg.ModelBasePath = "lin", lin })
	ctx := ctxT(t)
	if err := c.srv.Reload(ctx, &servingpb.ModelServerConfig{Config: &servingpb.ModelServerConfig_ModelConfigList{ModelConfigList: &servingpb.ModelConfigList{Config: []*servingpb.ModelConfig{
		{Name: "lin", BasePath: lin, ModelPlatform: "tensorflow"},
		{Name: "txt", BasePath: txt, ModelPlatform: "tensorflow"},
	}}}}); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	good := features(t, []float32{1, 2, 3})
	row4 := []int64{1, 2, 3, 4}
	goodText := map[string]*tfpb.TensorProto{"input_ids": ids(t, 1, row4...), "attention_mask": ids(t, 1, 1, 1, 1, 0)}
	latest := func(name string) *servingpb.ModelSpec { return &servingpb.ModelSpec{Name: name} }
	wrongDType := map[string]*tfpb.TensorProto{"features": must(tensor.FromFloat64([]float64{1, 2, 3}, 1, 3))}
	wrongShape := features(t, []float32{1, 2})
	badParse := map[string]*tfpb.TensorProto{"features": {Dtype: tfpb.DataType_DT_FLOAT, TensorShape: tensor.Shape(1, 3), FloatVal: []float32{1}}}
	idsDtype := map[string]*tfpb.TensorProto{"input_ids": must(tensor.FromInt32([]int32{1, 2, 3, 4}, 1, 4)), "attention_mask": ids(t, 1, 1, 1, 1, 1)}
	batchDiff := map[string]*tfpb.TensorProto{"input_ids": ids(t, 2, 1, 2, 3, 4, 5, 6, 7, 8), "attention_mask": ids(t, 1, 1, 1, 1, 1)}
	outOfRange := map[string]*tfpb.TensorProto{"input_ids": ids(t, 1, 1, 2, 999, 4), "attention_mask": ids(t, 1, 1, 1, 1, 1)}

	tests := []struct {
		name string
		req  *servingpb.PredictRequest
		code codes.Code
		msg  string
	}{
		{"no model_spec", &servingpb.PredictRequest{Inputs: good}, codes.InvalidArgument, "Missing ModelSpec"},
		{"empty model name", &servingpb.PredictRequest{ModelSpec: &servingpb.ModelSpec{}, Inputs: good}, codes.InvalidArgument, "ModelSpec has no name specified."},
		{"unknown model", &servingpb.PredictRequest{ModelSpec: latest("nope"), Inputs: good}, codes.NotFound, "Servable not found for request: Latest(nope)"},
		{"unknown model with version", &servingpb.PredictRequest{ModelSpec: specV("nope", 4), Inputs: good}, codes.NotFound, "Servable not found for request: Specific(nope, 4)"},
		{"version not loaded", &servingpb.PredictRequest{ModelSpec: specV("lin", 9), Inputs: good}, codes.NotFound, "Servable not found for request: Specific(lin, 9)"},
		{"unknown label", &servingpb.PredictRequest{ModelSpec: specL("lin", "canary"), Inputs: good}, codes.InvalidArgument, "Unrecognized servable version label: canary"},
		{"signature missing", &servingpb.PredictRequest{ModelSpec: &servingpb.ModelSpec{Name: "lin", SignatureName: "sig2"}, Inputs: good}, codes.FailedPrecondition, `Serving signature key "sig2" not found.`},
		{"missing input", &servingpb.PredictRequest{ModelSpec: latest("txt"), Inputs: map[string]*tfpb.TensorProto{"input_ids": ids(t, 1, row4...)}}, codes.InvalidArgument,
			"input size does not match signature: 1!=2 len({input_ids}) != len({attention_mask,input_ids}). Sent extra: {}. Missing but required: {attention_mask}."},
		{"extra input", &servingpb.PredictRequest{ModelSpec: latest("lin"), Inputs: map[string]*tfpb.TensorProto{"features": good["features"], "x": good["features"]}}, codes.InvalidArgument,
			"input size does not match signature: 2!=1 len({features,x}) != len({features}). Sent extra: {x}. Missing but required: {}."},
		{"no inputs", &servingpb.PredictRequest{ModelSpec: latest("lin")}, codes.InvalidArgument,
			"input size does not match signature: 0!=1 len({}) != len({features}). Sent extra: {}. Missing but required: {features}."},
		{"wrong input name", &servingpb.PredictRequest{ModelSpec: latest("lin"), Inputs: map[string]*tfpb.TensorProto{"feats": good["features"]}}, codes.InvalidArgument,
			"input tensor alias not found in signature: feats. Inputs expected to be in the set {features}."},
		{"wrong dtype", &servingpb.PredictRequest{ModelSpec: latest("lin"), Inputs: wrongDType}, codes.InvalidArgument, "Expects arg[0] to be float but double is provided"},
		{"wrong dtype second arg", &servingpb.PredictRequest{ModelSpec: latest("txt"), Inputs: idsDtype}, codes.InvalidArgument, "Expects arg[1] to be int64 but int32 is provided"},
		{"wrong shape", &servingpb.PredictRequest{ModelSpec: latest("lin"), Inputs: wrongShape}, codes.InvalidArgument, `input "features" has shape [1,2], which is incompatible with the signature's [?,3]`},
		{"tensor values do not match shape", &servingpb.PredictRequest{ModelSpec: latest("lin"), Inputs: badParse}, codes.InvalidArgument, "tensor parsing error: features"},
		{"batch dims differ", &servingpb.PredictRequest{ModelSpec: latest("txt"), Inputs: batchDiff}, codes.InvalidArgument, "Incompatible shapes: [1,4] vs. [2,4]"},
		{"token id out of range", &servingpb.PredictRequest{ModelSpec: latest("txt"), Inputs: outOfRange}, codes.InvalidArgument, "indices[0,2] = 999 is not in [0, 200)"},
		{"unknown output filter", &servingpb.PredictRequest{ModelSpec: latest("txt"), Inputs: goodText, OutputFilter: []string{"logits"}}, codes.InvalidArgument,
			"output tensor alias not found in signature: logits Outputs expected to be in the set {embedding,scores}."},
		{"duplicate output filter", &servingpb.PredictRequest{ModelSpec: latest("txt"), Inputs: goodText, OutputFilter: []string{"scores", "scores"}}, codes.InvalidArgument,
			"duplicate output tensor alias: scores"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.predict.Predict(ctx, tc.req)
			if s := status.Convert(err); s.Code() != tc.code || s.Message() != tc.msg {
				t.Errorf("Predict(%v):\n got %v %q\nwant %v %q", tc.req.GetModelSpec(), s.Code(), s.Message(), tc.code, tc.msg)
			}
		})
	}

	metaTests := []struct {
		name string
		req  *servingpb.GetModelMetadataRequest
		code codes.Code
		msg  string
	}{
		{"no model_spec", &servingpb.GetModelMetadataRequest{MetadataField: []string{"signature_def"}}, codes.InvalidArgument, "Missing ModelSpec"},
		{"no metadata_field", &servingpb.GetModelMetadataRequest{ModelSpec: latest("lin")}, codes.InvalidArgument, "GetModelMetadataRequest must specify at least one metadata_field"},
		{"unsupported field", &servingpb.GetModelMetadataRequest{ModelSpec: latest("lin"), MetadataField: []string{"graph"}}, codes.InvalidArgument, "Metadata field graph is not supported"},
		{"unknown model", &servingpb.GetModelMetadataRequest{ModelSpec: latest("nope"), MetadataField: []string{"signature_def"}}, codes.NotFound, "Servable not found for request: Latest(nope)"},
		{"unknown label", &servingpb.GetModelMetadataRequest{ModelSpec: specL("lin", "x"), MetadataField: []string{"signature_def"}}, codes.InvalidArgument, "Unrecognized servable version label: x"},
	}
	for _, tc := range metaTests {
		t.Run("metadata/"+tc.name, func(t *testing.T) {
			_, err := c.predict.GetModelMetadata(ctx, tc.req)
			if s := status.Convert(err); s.Code() != tc.code || s.Message() != tc.msg {
				t.Errorf("GetModelMetadata(%v):\n got %v %q\nwant %v %q", tc.req, s.Code(), s.Message(), tc.code, tc.msg)
			}
		})
	}

	statusTests := []struct {
		name string
		spec *servingpb.ModelSpec
		code codes.Code
		msg  string
	}{
		{"no model_spec", nil, codes.InvalidArgument, "Missing ModelSpec"},
		{"unknown model", latest("nope"), codes.NotFound, "Could not find any versions of model nope"},
		{"unknown version", specV("lin", 9), codes.NotFound, "Could not find version 9 of model lin"},
	}
	for _, tc := range statusTests {
		t.Run("status/"+tc.name, func(t *testing.T) {
			_, err := c.model.GetModelStatus(ctx, &servingpb.GetModelStatusRequest{ModelSpec: tc.spec})
			if s := status.Convert(err); s.Code() != tc.code || s.Message() != tc.msg {
				t.Errorf("GetModelStatus(%v):\n got %v %q\nwant %v %q", tc.spec, s.Code(), s.Message(), tc.code, tc.msg)
			}
		})
	}

	t.Run("classify on a predict signature", func(t *testing.T) {
		_, err := c.predict.Classify(ctx, &servingpb.ClassificationRequest{ModelSpec: latest("lin")})
		want := "Expected classification signature method_name to be tensorflow/serving/classify. Was: tensorflow/serving/predict"
		if s := status.Convert(err); s.Code() != codes.InvalidArgument || s.Message() != want {
			t.Errorf("Classify: got %v %q, want INVALID_ARGUMENT %q", s.Code(), s.Message(), want)
		}
	})
	t.Run("regress on a predict signature", func(t *testing.T) {
		_, err := c.predict.Regress(ctx, &servingpb.RegressionRequest{ModelSpec: latest("lin")})
		want := "Expected regression signature method_name to be tensorflow/serving/regress. Was: tensorflow/serving/predict"
		if s := status.Convert(err); s.Code() != codes.InvalidArgument || s.Message() != want {
			t.Errorf("Regress: got %v %q, want INVALID_ARGUMENT %q", s.Code(), s.Message(), want)
		}
	})
	t.Run("classify unknown model", func(t *testing.T) {
		_, err := c.predict.Classify(ctx, &servingpb.ClassificationRequest{ModelSpec: latest("nope")})
		if s := status.Convert(err); s.Code() != codes.NotFound {
			t.Errorf("Classify(nope): got %v, want NOT_FOUND", err)
		}
	})
	t.Run("multiinference without tasks", func(t *testing.T) {
		_, err := c.predict.MultiInference(ctx, &servingpb.MultiInferenceRequest{})
		if s := status.Convert(err); s.Code() != codes.InvalidArgument || s.Message() != "Inference request should have at least one task" {
			t.Errorf("MultiInference: got %v", err)
		}
	})
	t.Run("multiinference classify task", func(t *testing.T) {
		_, err := c.predict.MultiInference(ctx, &servingpb.MultiInferenceRequest{Tasks: []*servingpb.InferenceTask{{ModelSpec: latest("lin"), MethodName: "tensorflow/serving/classify"}}})
		if s := status.Convert(err); s.Code() != codes.InvalidArgument {
			t.Errorf("MultiInference: got %v, want INVALID_ARGUMENT", err)
		}
	})

	reloadTests := []struct {
		name string
		cfg  *servingpb.ModelServerConfig
		code codes.Code
		msg  string
	}{
		{"not a model_config_list", &servingpb.ModelServerConfig{Config: &servingpb.ModelServerConfig_CustomModelConfig{CustomModelConfig: &anypb.Any{}}}, codes.InvalidArgument,
			"ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList is currently supported"},
		{"empty config", &servingpb.ModelServerConfig{}, codes.InvalidArgument,
			"ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList is currently supported"},
		{"duplicate names", list(mc("lin", lin), mc("lin", txt)), codes.InvalidArgument, "Illegal to list model lin multiple times in config list"},
		{"relative base_path", list(mc("lin", "models/lin")), codes.InvalidArgument, "Expected model lin to have an absolute path or URI; got base_path()=models/lin"},
		{"no platform", list(&servingpb.ModelConfig{Name: "lin", BasePath: lin}), codes.InvalidArgument,
			"Illegal setting neither ModelServerConfig::model_type (deprecated) nor ModelServerConfig::model_platform."},
		{"unsupported platform", list(&servingpb.ModelConfig{Name: "lin", BasePath: lin, ModelPlatform: "pytorch"}), codes.InvalidArgument, "Model lin requests unsupported platform pytorch"},
		{"label on a version not loaded", list(withLabels(mc("lin", lin), "stable", 7)), codes.FailedPrecondition,
			"Request to assign label to version 7 of model lin, which is not currently available for inference" + servingsim.LabelHint},
	}
	if !strings.Contains(servingsim.LabelHint, "--allow_version_labels_for_unavailable_models") {
		t.Errorf("the label error does not name the flag that allows it: %q", servingsim.LabelHint)
	}
	for _, tc := range reloadTests {
		t.Run("reload/"+tc.name, func(t *testing.T) {
			resp, err := c.model.HandleReloadConfigRequest(ctx, &servingpb.ReloadConfigRequest{Config: tc.cfg})
			if s := status.Convert(err); s.Code() != tc.code || s.Message() != tc.msg {
				t.Errorf("HandleReloadConfigRequest(%v):\n got %v %q (response %v)\nwant %v %q", tc.cfg, s.Code(), s.Message(), resp, tc.code, tc.msg)
			}
		})
	}
	// A rejected reload changed nothing: both models still serve.
	for _, name := range []string{"lin", "txt"} {
		if _, err := c.model.GetModelStatus(ctx, &servingpb.GetModelStatusRequest{ModelSpec: latest(name)}); err != nil {
			t.Errorf("after rejected reloads, GetModelStatus(%s): %v", name, err)
		}
	}
	if _, err := c.predict.Predict(ctx, &servingpb.PredictRequest{ModelSpec: latest("txt"), Inputs: goodText}); err != nil {
		t.Errorf("after rejected reloads, Predict(txt): %v", err)
	}
}

func mc(name, base string) *servingpb.ModelConfig {
	return &servingpb.ModelConfig{Name: name, BasePath: base, ModelPlatform: "tensorflow"}
}

func withLabels(m *servingpb.ModelConfig, kv ...any) *servingpb.ModelConfig {
	m.VersionLabels = map[string]int64{}
	for i := 0; i < len(kv); i += 2 {
		m.VersionLabels[kv[i].(string)] = int64(kv[i+1].(int))
	}
	return m
}

func list(ms ...*servingpb.ModelConfig) *servingpb.ModelServerConfig {
	return &servingpb.ModelServerConfig{Config: &servingpb.ModelServerConfig_ModelConfigList{ModelConfigList: &servingpb.ModelConfigList{Config: ms}}}
}
