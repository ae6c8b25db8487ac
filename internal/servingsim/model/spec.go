package model

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	tfpb "github.com/tfgate/tfgate/proto/tensorflow"
)

// SpecPath is where a version directory holds its spec, relative to the directory.
const SpecPath = "assets.extra/servingsim.json"

// FormatVersion is the only format_version this package reads.
const FormatVersion = 1

// Kinds of model the simulator executes.
const (
	KindTextClassifier = "text-classifier"
	KindLinear         = "linear"
	KindRegressor      = "regressor"
)

// Signature and method names, as in TensorFlow.
const (
	DefaultSignature  = "serving_default"
	PredictMethodName = "tensorflow/serving/predict"
)

// Limits on spec parameters, so a hostile spec cannot make the loader allocate
// without bound (weights are Params-sized).
const (
	MaxVocabSize    = 1 << 20
	MaxDim          = 4096
	MaxLen          = 4096
	MaxWeightValues = 1 << 26
)

// ErrSpec reports a missing, malformed or inconsistent servingsim.json.
var ErrSpec = errors.New("invalid servingsim spec")

// Spec is the content of assets.extra/servingsim.json. See the package documentation
// for the format.
type Spec struct {
	// FormatVersion must be 1.
	FormatVersion int `json:"format_version"`
	// Kind is text-classifier, linear or regressor.
	Kind string `json:"kind"`
	// Seed derives the weights when Weights is absent. Default 0.
	Seed int64 `json:"seed"`
	// Params sizes the model.
	Params Params `json:"params"`
	// Signatures declares each signature; each must have the inputs and outputs
	// the kind computes (Expected). At least one is required.
	Signatures map[string]SignatureSpec `json:"signatures"`
	// Weights, when present, replace the seed-derived ones.
	Weights *Weights `json:"weights,omitempty"`
	// Cost is the simulated compute cost (zero: none).
	Cost Cost `json:"cost"`
	// ResidentBytes is the memory the version holds once loaded, counted against
	// the server's --model_memory_limit_bytes and driving the simulated load time
	// (--sim_load_bytes_per_second). It lets a benchmark model versions of
	// realistic sizes without writing them. Default 0: not counted, loads at once.
	ResidentBytes int64 `json:"resident_bytes,omitempty"`
}

// MaxResidentBytes bounds a declared resident size (1 PiB).
const MaxResidentBytes = 1 << 50

// Params sizes a model. Which fields a kind uses is listed with each field.
type Params struct {
	// VocabSize (text-classifier): rows of the embedding table; ids are in [0, VocabSize).
	VocabSize int `json:"vocab_size,omitempty"`
	// MaxLen (text-classifier): L, the second dimension of input_ids and attention_mask.
	MaxLen int `json:"max_len,omitempty"`
	// EmbeddingDim (text-classifier): E, the width of the embedding output.
	EmbeddingDim int `json:"embedding_dim,omitempty"`
	// Features (linear, regressor): D, the width of the features input.
	Features int `json:"features,omitempty"`
	// Classes (text-classifier, linear): C, the width of the scores output.
	Classes int `json:"classes,omitempty"`
}

// SignatureSpec declares one SignatureDef.
type SignatureSpec struct {
	// MethodName defaults to tensorflow/serving/predict.
	MethodName string                `json:"method_name,omitempty"`
	Inputs     map[string]TensorSpec `json:"inputs"`
	Outputs    map[string]TensorSpec `json:"outputs"`
}

// TensorSpec is one input or output: a DataType name (DT_FLOAT) and a shape where
// -1 is an unknown dimension (the batch dimension comes first).
type TensorSpec struct {
	DType string  `json:"dtype"`
	Shape []int64 `json:"shape"`
}

// Weights are explicit row-major parameters. Sizes by kind:
// text-classifier: embedding VocabSize*EmbeddingDim, kernel EmbeddingDim*Classes, bias Classes;
// linear: kernel Features*Classes, bias Classes; regressor: kernel Features, bias 1.
type Weights struct {
	Embedding []float32 `json:"embedding,omitempty"`
	Kernel    []float32 `json:"kernel"`
	Bias      []float32 `json:"bias"`
}

// Cost is a model's simulated compute cost.
type Cost struct {
	// PerCallMicros is spent once per execution (a batch is one execution). Default 0.
	PerCallMicros int64 `json:"per_call_micros,omitempty"`
	// PerRowMicros is spent per batch row, padding rows included. Default 0.
	PerRowMicros int64 `json:"per_row_micros,omitempty"`
	// MaxConcurrent bounds concurrent executions of this model version on one
	// server; 0 means unbounded. Default 0.
	MaxConcurrent int `json:"max_concurrent,omitempty"`
}

// Parse decodes and validates a spec, rejecting unknown fields and reporting every
// problem it finds. Errors wrap ErrSpec.
func Parse(b []byte) (*Spec, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var s Spec
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSpec, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing data after the JSON object", ErrSpec)
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

// Marshal encodes a spec as indented JSON.
func (s *Spec) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Expected returns the signature a kind computes with these params, or an error
// for an unknown kind.
func Expected(kind string, p Params) (SignatureSpec, error) {
	f := func(shape ...int64) TensorSpec { return TensorSpec{DType: "DT_FLOAT", Shape: shape} }
	i := func(shape ...int64) TensorSpec { return TensorSpec{DType: "DT_INT64", Shape: shape} }
	switch kind {
	case KindTextClassifier:
		L := int64(p.MaxLen)
		return SignatureSpec{MethodName: PredictMethodName,
			Inputs:  map[string]TensorSpec{"input_ids": i(-1, L), "attention_mask": i(-1, L)},
			Outputs: map[string]TensorSpec{"scores": f(-1, int64(p.Classes)), "embedding": f(-1, int64(p.EmbeddingDim))},
		}, nil
	case KindLinear:
		return SignatureSpec{MethodName: PredictMethodName,
			Inputs:  map[string]TensorSpec{"features": f(-1, int64(p.Features))},
			Outputs: map[string]TensorSpec{"scores": f(-1, int64(p.Classes))},
		}, nil
	case KindRegressor:
		return SignatureSpec{MethodName: PredictMethodName,
			Inputs:  map[string]TensorSpec{"features": f(-1, int64(p.Features))},
			Outputs: map[string]TensorSpec{"values": f(-1, 1)},
		}, nil
	}
	return SignatureSpec{}, fmt.Errorf("%w: kind %q is not one of %s, %s, %s", ErrSpec, kind, KindTextClassifier, KindLinear, KindRegressor)
}

// weightSizes returns the lengths of embedding, kernel and bias for a spec.
func weightSizes(kind string, p Params) (emb, kernel, bias int) {
	switch kind {
	case KindTextClassifier:
		return p.VocabSize * p.EmbeddingDim, p.EmbeddingDim * p.Classes, p.Classes
	case KindLinear:
		return 0, p.Features * p.Classes, p.Classes
	case KindRegressor:
		return 0, p.Features, 1
	}
	return 0, 0, 0
}

// Validate reports every problem with a spec at once, wrapping ErrSpec.
func (s *Spec) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if s.FormatVersion != FormatVersion {
		bad("format_version is %d, want %d", s.FormatVersion, FormatVersion)
	}
	p := s.Params
	inRange := func(name string, v, lo, hi int) {
		if v < lo || v > hi {
			bad("params.%s is %d, want %d..%d", name, v, lo, hi)
		}
	}
	kindOK := true
	switch s.Kind {
	case KindTextClassifier:
		inRange("vocab_size", p.VocabSize, 2, MaxVocabSize)
		inRange("max_len", p.MaxLen, 1, MaxLen)
		inRange("embedding_dim", p.EmbeddingDim, 1, MaxDim)
		inRange("classes", p.Classes, 1, MaxDim)
		if p.Features != 0 {
			bad("params.features is for linear and regressor models, not %s", s.Kind)
		}
	case KindLinear, KindRegressor:
		inRange("features", p.Features, 1, MaxDim)
		if s.Kind == KindLinear {
			inRange("classes", p.Classes, 1, MaxDim)
		} else if p.Classes != 0 {
			bad("params.classes is not used by regressor models (the output is values [-1, 1])")
		}
		if p.VocabSize != 0 || p.MaxLen != 0 || p.EmbeddingDim != 0 {
			bad("params.vocab_size, max_len and embedding_dim are for text-classifier models, not %s", s.Kind)
		}
	default:
		kindOK = false
		bad("kind %q is not one of %s, %s, %s", s.Kind, KindTextClassifier, KindLinear, KindRegressor)
	}
	if len(s.Signatures) == 0 {
		bad("signatures is empty: declare at least %q", DefaultSignature)
	}
	paramsOK := len(errs) == 0
	if kindOK && paramsOK {
		want, _ := Expected(s.Kind, p)
		for _, key := range slices.Sorted(maps.Keys(s.Signatures)) {
			if key == "" {
				bad("a signature has an empty name")
			}
			sig := s.Signatures[key]
			if sig.MethodName != "" && sig.MethodName != PredictMethodName {
				bad("signatures[%q].method_name is %q; the simulator runs only %q", key, sig.MethodName, PredictMethodName)
			}
			for _, e := range diffTensors("signatures["+key+"].inputs", sig.Inputs, want.Inputs) {
				errs = append(errs, e)
			}
			for _, e := range diffTensors("signatures["+key+"].outputs", sig.Outputs, want.Outputs) {
				errs = append(errs, e)
			}
		}
		if w := s.Weights; w != nil {
			emb, kernel, bias := weightSizes(s.Kind, p)
			if len(w.Embedding) != emb {
				bad("weights.embedding has %d values, want %d", len(w.Embedding), emb)
			}
			if len(w.Kernel) != kernel {
				bad("weights.kernel has %d values, want %d", len(w.Kernel), kernel)
			}
			if len(w.Bias) != bias {
				bad("weights.bias has %d values, want %d", len(w.Bias), bias)
			}
		} else if emb, kernel, _ := weightSizes(s.Kind, p); emb+kernel > MaxWeightValues {
			bad("the model has %d weights, at most %d", emb+kernel, MaxWeightValues)
		}
	}
	if s.Cost.PerCallMicros < 0 || s.Cost.PerRowMicros < 0 || s.Cost.MaxConcurrent < 0 {
		bad("cost values must not be negative: %+v", s.Cost)
	}
	if s.Cost.PerCallMicros > 60e6 || s.Cost.PerRowMicros > 60e6 {
		bad("cost per call and per row are at most 60000000 µs (a minute)")
	}
	if s.ResidentBytes < 0 || s.ResidentBytes > MaxResidentBytes {
		bad("resident_bytes %d: want 0 <= n <= %d", s.ResidentBytes, int64(MaxResidentBytes))
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrSpec, JoinErrors(errs))
}

func diffTensors(where string, got, want map[string]TensorSpec) []error {
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(want)) {
		g, ok := got[name]
		w := want[name]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("%s lacks %q (%s %v)", where, name, w.DType, w.Shape))
		case g.DType != w.DType || !slices.Equal(g.Shape, w.Shape):
			errs = append(errs, fmt.Errorf("%s[%q] is %s %v, want %s %v", where, name, g.DType, g.Shape, w.DType, w.Shape))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[name]; !ok {
			errs = append(errs, fmt.Errorf("%s has %q, which this kind does not compute (it has %s)", where, name, strings.Join(slices.Sorted(maps.Keys(want)), ", ")))
		}
	}
	return errs
}

// SignatureDef converts a declared signature to TensorFlow's proto. Tensor names
// are the alias with ":0" appended, as a SavedModel export names them.
func (sig SignatureSpec) SignatureDef() *tfpb.SignatureDef {
	conv := func(m map[string]TensorSpec) map[string]*tfpb.TensorInfo {
		out := make(map[string]*tfpb.TensorInfo, len(m))
		for name, t := range m {
			sh := &tfpb.TensorShapeProto{}
			for _, d := range t.Shape {
				sh.Dim = append(sh.Dim, &tfpb.TensorShapeProto_Dim{Size: d})
			}
			out[name] = &tfpb.TensorInfo{
				Encoding:    &tfpb.TensorInfo_Name{Name: name + ":0"},
				Dtype:       tfpb.DataType(tfpb.DataType_value[t.DType]),
				TensorShape: sh,
			}
		}
		return out
	}
	m := sig.MethodName
	if m == "" {
		m = PredictMethodName
	}
	return &tfpb.SignatureDef{Inputs: conv(sig.Inputs), Outputs: conv(sig.Outputs), MethodName: m}
}

// errList is errors.Join on one line: "a; b; c". errors.Is/As see every element.
type errList []error

func (l errList) Error() string {
	s := make([]string, len(l))
	for i, e := range l {
		s[i] = e.Error()
	}
	return strings.Join(s, "; ")
}

func (l errList) Unwrap() []error { return l }

// JoinErrors joins errs into one single-line error (nil when empty).
func JoinErrors(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return errList(errs)
}
