package modelgen

import (
	"encoding/json"
	"fmt"

	"github.com/tfgate/tfgate/internal/servingsim/model"
	"github.com/tfgate/tfgate/preprocess"
)

// PreprocessSpecPath is where every exported version gets its tfgate
// preprocessing spec, in the format package preprocess documents and decodes.
const PreprocessSpecPath = preprocess.SpecPath

// SegmentFeature is the categorical feature of linear and regressor models with at
// least 4 features: it is looked up in SegmentValues and one-hot encoded into the
// last 3 slots of "features" (2 values + 1 out-of-vocabulary bucket). The other
// slots are numeric features named as in assets/features.txt.
const SegmentFeature = "segment"

// SegmentValues are the in-vocabulary values of SegmentFeature; any other value
// goes to the out-of-vocabulary slot, a missing one defaults to the first.
var SegmentValues = []string{"consumer", "business"}

func init() { extras = append(extras, writePreprocessSpec) }

// writePreprocessSpec adds the version's preprocessing spec, matching the
// signature model.Expected gives the kind:
//   - text-classifier: NFKC + case folding, BERT-style splitting, WordPiece over
//     assets/vocab.txt (which differs per seed), padded/truncated to MaxLen with
//     an attention mask; scores (already softmaxed) labelled from
//     assets/labels.txt, and the embedding.
//   - linear / regressor: numeric features standardized with a mean and std
//     derived from the seed (so versions preprocess differently), all but the
//     first with a default; plus SegmentFeature when there are 4 or more slots.
//     linear decodes labelled scores, regressor its values.
func writePreprocessSpec(files map[string][]byte, spec Spec) error {
	ps := preprocessSpec(spec.WithDefaults())
	b, err := json.MarshalIndent(ps, "", "  ")
	if err != nil {
		return fmt.Errorf("modelgen: preprocessing spec: %w", err)
	}
	files[PreprocessSpecPath] = append(b, '\n')
	return nil
}

func preprocessSpec(s Spec) preprocess.SpecJSON {
	ps := preprocess.SpecJSON{
		Format:      preprocess.Format,
		Description: fmt.Sprintf("modelgen %s, seed %d", s.Kind, s.Seed),
		Metadata:    map[string]string{"generator": "modelgen", "kind": s.Kind, "seed": fmt.Sprint(s.Seed)},
	}
	switch s.Kind {
	case model.KindTextClassifier:
		L := int64(s.MaxLen)
		ps.Text = &preprocess.TextJSON{
			Normalize: &preprocess.NormalizeJSON{Form: new("NFKC"), CaseFold: new(true)},
			Tokenize:  &preprocess.TokenizeJSON{Punctuation: new(true), CJK: new(true)},
			WordPiece: &preprocess.WordPieceJSON{
				Vocab: "assets/vocab.txt", UnkToken: new(UnkToken), ContinuationPrefix: new("##"), MaxCharsPerWord: new(100),
			},
			MaxLength:     s.MaxLen,
			PadToken:      new(PadToken),
			TokenIDs:      &preprocess.TensorJSON{Input: "input_ids", DType: "DT_INT64", Shape: []int64{-1, L}},
			AttentionMask: &preprocess.TensorJSON{Input: "attention_mask", DType: "DT_INT64", Shape: []int64{-1, L}},
		}
		ps.Outputs = []preprocess.OutputJSON{
			{Output: "scores", Kind: "scores", Labels: "assets/labels.txt"},
			{Output: "embedding", Kind: "embedding"},
		}
	case model.KindLinear, model.KindRegressor:
		names := s.FeatureNames
		if names == nil {
			for i := range s.Features {
				names = append(names, fmt.Sprintf("f%d", i))
			}
		}
		g := preprocess.GroupJSON{Input: "features", DType: "DT_FLOAT", Shape: []int64{-1, int64(s.Features)}}
		numeric := s.Features
		if s.Features >= 4 {
			numeric = s.Features - 3
			g.Categorical = []preprocess.CategoricalJSON{{
				Name: SegmentFeature, Slot: new(numeric), Vocab: SegmentValues, OOVBuckets: 1, Default: new(SegmentValues[0]),
			}}
		}
		for i := range numeric {
			mean := float64(posMod(s.Seed*31+int64(i)*7, 10)+10) / 2 // 5.0 .. 9.5, by seed
			std := 1 + float64(posMod(s.Seed+int64(i), 4))/2         // 1.0 .. 2.5
			f := preprocess.NumericJSON{Name: names[i], Slot: new(i), Mean: mean, Std: new(std)}
			if i > 0 {
				f.Default = new(mean)
			}
			g.Numeric = append(g.Numeric, f)
		}
		ps.Features = []preprocess.GroupJSON{g}
		if s.Kind == model.KindLinear {
			ps.Outputs = []preprocess.OutputJSON{{Output: "scores", Kind: "scores", Labels: "assets/labels.txt"}}
		} else {
			ps.Outputs = []preprocess.OutputJSON{{Output: "values", Kind: "values"}}
		}
	}
	return ps
}

func ptr[T any](v T) *T { return &v }

func posMod(x, n int64) int64 { return ((x % n) + n) % n }
