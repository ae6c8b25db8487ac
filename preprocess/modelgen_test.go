package preprocess_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/tfgate/tfgate/internal/modelgen"
	"github.com/tfgate/tfgate/internal/servingsim/model"
	"github.com/tfgate/tfgate/internal/tensor"
	"github.com/tfgate/tfgate/preprocess"
	tfpb "github.com/tfgate/tfgate/proto/tensorflow"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// This file is an external test: modelgen writes its specs with preprocess's own
// schema types, so an internal test of preprocess could not import it.

// modelgenPipeline exports a model version with modelgen and compiles the spec it
// ships, checking it against the signature servingsim serves for it.
func modelgenPipeline(t *testing.T, spec modelgen.Spec) *preprocess.Pipeline {
	t.Helper()
	files, err := modelgen.Files(spec)
	if err != nil {
		t.Fatal(err)
	}
	fsys := fstest.MapFS{}
	for name, b := range files {
		fsys[name] = &fstest.MapFile{Data: b}
	}
	b, ok := files[preprocess.SpecPath]
	if !ok {
		t.Fatalf("modelgen wrote no %s", preprocess.SpecPath)
	}
	p, err := preprocess.Parse(b, fsys)
	if err != nil {
		t.Fatalf("modelgen's spec for %+v does not parse: %v\n%s", spec, err, b)
	}
	ms, err := spec.ModelSpec()
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(ms)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.CheckSignature(m.Signatures()[model.DefaultSignature]); err != nil {
		t.Fatalf("modelgen's spec does not match its signature: %v", err)
	}
	return p
}

func TestModelgenSpecs(t *testing.T) {
	t.Run("text-classifier", func(t *testing.T) {
		p1 := modelgenPipeline(t, modelgen.Spec{Kind: model.KindTextClassifier, Seed: 1})
		p2 := modelgenPipeline(t, modelgen.Spec{Kind: model.KindTextClassifier, Seed: 2})
		in := preprocess.Texts("The delivery was slow, the refund took a very long time!", "great movie")
		o1, err1 := p1.Encode(in)
		o2, err2 := p2.Encode(in)
		if err1 != nil || err2 != nil {
			t.Fatalf("Encode: %v, %v", err1, err2)
		}
		preprocess.CheckBounded(t, p1, o1, 2)
		ids1, _ := tensor.Int64s(o1["input_ids"])
		ids2, _ := tensor.Int64s(o2["input_ids"])
		if reflect.DeepEqual(ids1, ids2) {
			t.Error("two seeds (different vocabularies) give the same input_ids")
		}
		// Lowercase ASCII never needs [UNK] with modelgen vocabularies.
		for _, id := range ids1 {
			if id == 1 {
				t.Errorf("input_ids %v contain [UNK]", ids1)
				break
			}
		}
		if l := p1.Outputs()[0].Labels; len(l) != 8 {
			t.Errorf("labels %v, want 8", l)
		}
	})
	for _, kind := range []string{model.KindLinear, model.KindRegressor} {
		t.Run(kind, func(t *testing.T) {
			p := modelgenPipeline(t, modelgen.Spec{Kind: kind, Seed: 3})
			q := modelgenPipeline(t, modelgen.Spec{Kind: kind, Seed: 4})
			if got, want := p.NumericFeatures(), []string{"f0", "f1", "f2", "f3", "f4"}; !reflect.DeepEqual(got, want) {
				t.Errorf("numeric features %v, want %v", got, want)
			}
			if got := p.CategoricalFeatures(); !reflect.DeepEqual(got, []string{modelgen.SegmentFeature}) {
				t.Errorf("categorical features %v", got)
			}
			in := []*tfgatev1.Instance{{Numeric: map[string]float64{"f0": 1, "f3": 2}, Categorical: map[string]string{"segment": "business"}}}
			a, err := p.Encode(in)
			if err != nil {
				t.Fatal(err)
			}
			b, err := q.Encode(in)
			if err != nil {
				t.Fatal(err)
			}
			av, _ := tensor.Float32s(a["features"])
			bv, _ := tensor.Float32s(b["features"])
			if len(av) != 8 || av[5] != 0 || av[6] != 1 || av[7] != 0 {
				t.Errorf("features %v: want segment one-hot [0 1 0] in slots 5-7", av)
			}
			if reflect.DeepEqual(av, bv) {
				t.Error("two seeds standardize identically")
			}
			_, err = p.Encode([]*tfgatev1.Instance{{Numeric: map[string]float64{"f1": 1}}})
			if !errors.Is(err, preprocess.ErrInvalidInput) || !strings.Contains(err.Error(), `"f0"`) {
				t.Errorf("missing required f0: %v", err)
			}
		})
	}
}

// TestModelgenSmallLinear: fewer than 4 features are all numeric.
func TestModelgenSmallLinear(t *testing.T) {
	p := modelgenPipeline(t, modelgen.Spec{Kind: model.KindRegressor, Features: 3, FeatureNames: []string{"age", "income", "tenure"}, Seed: -7})
	if p.Accepts().Categorical || len(p.NumericFeatures()) != 3 {
		t.Fatalf("accepts %v, numeric %v", p.Accepts(), p.NumericFeatures())
	}
	out, err := p.Encode([]*tfgatev1.Instance{{Numeric: map[string]float64{"age": 30}}})
	if err != nil {
		t.Fatal(err)
	}
	preds, err := p.Decode(map[string]*tfpb.TensorProto{"values": mustF32(t, []float32{0.5}, 1, 1)}, 1, 0)
	if err != nil || len(preds[0].GetValues()) != 1 || len(out) != 1 {
		t.Fatalf("Decode: %v %v", preds, err)
	}
}

func mustF32(t *testing.T, v []float32, dims ...int64) *tfpb.TensorProto {
	t.Helper()
	tp, err := tensor.FromFloat32(v, dims...)
	if err != nil {
		t.Fatal(err)
	}
	return tp
}
