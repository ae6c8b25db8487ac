package preprocess

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"

	tfpb "github.com/tfgate/tfgate/proto/tensorflow"
)

// Sentinel errors. Match them with errors.Is.
var (
	// ErrSpec reports a spec that cannot be used: bad JSON, an unknown or invalid
	// field, a missing asset. The message names every field at fault.
	ErrSpec = errors.New("invalid preprocessing spec")
	// ErrNoSpec reports a model version directory without a spec file.
	ErrNoSpec = errors.New("model version has no preprocessing spec")
	// ErrInvalidInput reports instances the spec cannot encode. The message names
	// the instance index and the feature and says what to fix (INVALID_ARGUMENT).
	ErrInvalidInput = errors.New("invalid input")
	// ErrLimit is wrapped, together with ErrInvalidInput, by errors for requests
	// over a spec limit (too many instances, text too long), so that callers may
	// answer RESOURCE_EXHAUSTED instead of INVALID_ARGUMENT if they prefer.
	ErrLimit = errors.New("preprocessing limit exceeded")
	// ErrSignature reports a spec that does not match the version's signature.
	ErrSignature = errors.New("preprocessing spec does not match the model signature")
	// ErrOutput reports backend outputs that do not match the spec (a missing
	// output, a wrong shape or dtype): a server-side problem, not the caller's.
	ErrOutput = errors.New("model output does not match the preprocessing spec")
)

// Kinds says which instance kinds a spec takes.
type Kinds struct {
	Text        bool
	Numeric     bool
	Categorical bool
}

// String lists the kinds, e.g. "text" or "numeric, categorical".
func (k Kinds) String() string {
	var s []string
	if k.Text {
		s = append(s, "text")
	}
	if k.Numeric {
		s = append(s, "numeric")
	}
	if k.Categorical {
		s = append(s, "categorical")
	}
	if len(s) == 0 {
		return "nothing"
	}
	return strings.Join(s, ", ")
}

// InputSpec is one TF input a spec produces.
type InputSpec struct {
	// Name is the signature input key (PredictRequest.inputs).
	Name  string
	DType tfpb.DataType
	// Shape has -1 for the batch dimension.
	Shape []int64
	// Source is the spec field that feeds it, e.g. "text.token_ids" or "features[0]".
	Source string
}

// OutputKind is what Decode makes of an output tensor.
type OutputKind string

// Output kinds.
const (
	OutputScores    OutputKind = "scores"
	OutputValues    OutputKind = "values"
	OutputEmbedding OutputKind = "embedding"
)

// Activations applied to scores outputs.
const (
	ActivationNone    = "none"
	ActivationSoftmax = "softmax"
	ActivationSigmoid = "sigmoid"
)

// OutputSpec is one TF output a spec decodes.
type OutputSpec struct {
	Name       string
	Kind       OutputKind
	Activation string
	// Labels are the class names of a scores output, nil when none were given.
	Labels []string
}

// Limits bound one request.
type Limits struct {
	MaxInstances int
	MaxTextBytes int
}

// Pipeline is one model version's compiled spec. It is immutable and safe for
// concurrent use.
type Pipeline struct {
	fingerprint string
	hash        SpecHash
	size        int64 // estimated bytes, its text vocabulary excluded (see sizeBytes)
	description string
	metadata    map[string]string
	limits      Limits
	text        *textStep
	groups      []*group
	outputs     []*outputStep
	inputs      []InputSpec
	kinds       Kinds

	numeric          map[string]featureRef
	categorical      map[string]featureRef
	numericNames     []string
	categoricalNames []string
	scores           *outputStep
}

type featureRef struct{ group, index int }

// Load reads <versionDir>/assets.extra/tfgate-preprocess.json and the assets it
// names (paths relative to versionDir). A missing spec file wraps ErrNoSpec.
func Load(versionDir string) (*Pipeline, error) { return load(versionDir, nil) }

func load(versionDir string, vocabs *vocabCache) (*Pipeline, error) {
	// os.Root confines every read, symlinks included, to the version directory.
	root, err := os.OpenRoot(versionDir)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoSpec, err)
	}
	defer root.Close()
	fsys := root.FS()
	b, err := readLimited(fsys, SpecPath, MaxSpecBytes)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s not found in %s", ErrNoSpec, SpecPath, versionDir)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrSpec, SpecPath, err)
	}
	p, err := parse(b, fsys, vocabs)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", versionDir, err)
	}
	return p, nil
}

// Parse compiles a spec. Asset paths in the spec are resolved in assets (a model
// version directory); assets may be nil when the spec names no files. The error
// wraps ErrSpec and names every field at fault.
func Parse(spec []byte, assets fs.FS) (*Pipeline, error) { return parse(spec, assets, nil) }

func parse(spec []byte, assets fs.FS, vocabs *vocabCache) (*Pipeline, error) {
	s, err := decodeSpec(spec)
	if err != nil {
		return nil, err
	}
	c := &compiler{assets: assets, vocabs: vocabs, h: sha256.New(), key: newKeyHasher(spec)}
	c.h.Write(spec)
	p := c.compile(s)
	if err := c.probs.err(); err != nil {
		return nil, err
	}
	p.fingerprint = hex.EncodeToString(c.h.Sum(nil))[:16]
	p.hash = c.key.sum()
	p.size = p.sizeBytes()
	return p, nil
}

// Inputs lists the TF inputs Encode produces, in spec order.
func (p *Pipeline) Inputs() []InputSpec {
	out := make([]InputSpec, len(p.inputs))
	for i, in := range p.inputs {
		in.Shape = slices.Clone(in.Shape)
		out[i] = in
	}
	return out
}

// Outputs lists the TF outputs Decode reads, in spec order.
func (p *Pipeline) Outputs() []OutputSpec {
	out := make([]OutputSpec, len(p.outputs))
	for i, o := range p.outputs {
		out[i] = OutputSpec{Name: o.name, Kind: o.kind, Activation: o.activation, Labels: slices.Clone(o.labels)}
	}
	return out
}

// Accepts says which instance kinds the spec takes.
func (p *Pipeline) Accepts() Kinds { return p.kinds }

// Limits returns the per-request bounds Encode enforces.
func (p *Pipeline) Limits() Limits { return p.limits }

// SpecHash is the pipeline's content hash: equal hashes, identical pipelines.
func (p *Pipeline) SpecHash() SpecHash { return p.hash }

// Fingerprint is a short hash of the spec and every asset it read; two versions
// with the same fingerprint preprocess identically.
func (p *Pipeline) Fingerprint() string { return p.fingerprint }

// Description is the spec's free-text description.
func (p *Pipeline) Description() string { return p.description }

// Metadata returns a copy of the spec's free-form metadata.
func (p *Pipeline) Metadata() map[string]string {
	m := make(map[string]string, len(p.metadata))
	for k, v := range p.metadata {
		m[k] = v
	}
	return m
}

// NumericFeatures and CategoricalFeatures list the feature names the spec takes.
func (p *Pipeline) NumericFeatures() []string { return slices.Clone(p.numericNames) }

// CategoricalFeatures lists the categorical feature names the spec takes, sorted.
func (p *Pipeline) CategoricalFeatures() []string { return slices.Clone(p.categoricalNames) }

// compiler turns a decoded spec into a Pipeline, collecting every problem.
type compiler struct {
	assets fs.FS
	vocabs *vocabCache // nil: no sharing
	// assetBytes counts asset bytes read, against MaxAssetBytesTotal.
	assetBytes int64
	// width counts feature slots over all groups, against MaxFeatureWidth.
	width int
	probs problems
	h     interface {
		Write([]byte) (int, error)
		Sum([]byte) []byte
	}
	key keyHasher // the content hash, over the same bytes as h but framed
}

func (c *compiler) compile(s *SpecJSON) *Pipeline {
	p := &Pipeline{
		description: s.Description,
		metadata:    s.Metadata,
		limits:      Limits{MaxInstances: DefaultMaxInstances, MaxTextBytes: DefaultMaxTextBytes},
		numeric:     map[string]featureRef{},
		categorical: map[string]featureRef{},
	}
	if s.Format != Format {
		c.probs.addf("format", "got %q, want %q", s.Format, Format)
	}
	if l := s.Limits; l != nil {
		if l.MaxInstances != nil {
			p.limits.MaxInstances = *l.MaxInstances
			if *l.MaxInstances < 1 || *l.MaxInstances > MaxInstancesCap {
				c.probs.addf("limits.max_instances", "got %d, want 1..%d", *l.MaxInstances, MaxInstancesCap)
			}
		}
		if l.MaxTextBytes != nil {
			p.limits.MaxTextBytes = *l.MaxTextBytes
			if *l.MaxTextBytes < 1 || *l.MaxTextBytes > MaxTextBytesCap {
				c.probs.addf("limits.max_text_bytes", "got %d, want 1..%d", *l.MaxTextBytes, MaxTextBytesCap)
			}
		}
	}
	names := map[string]string{} // TF input name -> field that feeds it
	addInput := func(in InputSpec) {
		if in.Name == "" {
			return // reported by the caller
		}
		if prev, dup := names[in.Name]; dup {
			c.probs.addf(in.Source, "input %q is already fed by %s", in.Name, prev)
			return
		}
		names[in.Name] = in.Source
		p.inputs = append(p.inputs, in)
	}
	if s.Text != nil {
		p.text = c.compileText(s.Text, addInput)
		p.kinds.Text = true
	}
	if len(s.Features) > MaxFeatureGroups {
		c.probs.addf("features", "%d groups, at most %d", len(s.Features), MaxFeatureGroups)
		s.Features = s.Features[:MaxFeatureGroups]
	}
	if len(s.Outputs) > 3 {
		c.probs.addf("outputs", "%d outputs, at most 3 (one scores, one values, one embedding)", len(s.Outputs))
		s.Outputs = s.Outputs[:3]
	}
	for i := range s.Features {
		g := c.compileGroup(fmt.Sprintf("features[%d]", i), &s.Features[i], addInput)
		for j, f := range g.numeric {
			if _, dup := p.numeric[f.name]; dup {
				c.probs.addf(fmt.Sprintf("features[%d].numeric[%d].name", i, j), "numeric feature %q is declared twice", f.name)
			}
			p.numeric[f.name] = featureRef{i, j}
			p.numericNames = append(p.numericNames, f.name)
		}
		for j, f := range g.categorical {
			if _, dup := p.categorical[f.name]; dup {
				c.probs.addf(fmt.Sprintf("features[%d].categorical[%d].name", i, j), "categorical feature %q is declared twice", f.name)
			}
			p.categorical[f.name] = featureRef{i, j}
			p.categoricalNames = append(p.categoricalNames, f.name)
		}
		p.groups = append(p.groups, g)
	}
	sort.Strings(p.numericNames)
	sort.Strings(p.categoricalNames)
	p.kinds.Numeric = len(p.numeric) > 0
	p.kinds.Categorical = len(p.categorical) > 0
	elems := 0
	for _, in := range p.inputs {
		elems += rowWidth(in.Shape)
	}
	if elems*p.limits.MaxInstances > MaxElementsPerRequest {
		c.probs.addf("limits.max_instances", "%d instances of %d values each (all inputs) exceed %d values per request: lower max_instances or the input widths",
			p.limits.MaxInstances, elems, MaxElementsPerRequest)
	}
	if p.text == nil && len(p.groups) == 0 {
		c.probs.addf("", "the spec declares no inputs: give a \"text\" section or at least one \"features\" group")
	}
	if len(s.Outputs) == 0 {
		c.probs.addf("outputs", "declare at least one output (kind scores, values or embedding)")
	}
	seenOut := map[string]bool{}
	seenKind := map[OutputKind]bool{}
	for i := range s.Outputs {
		o := c.compileOutput(fmt.Sprintf("outputs[%d]", i), &s.Outputs[i])
		if o.name != "" && seenOut[o.name] {
			c.probs.addf(fmt.Sprintf("outputs[%d].output", i), "output %q is declared twice", o.name)
		}
		seenOut[o.name] = true
		if o.kind != "" && seenKind[o.kind] {
			c.probs.addf(fmt.Sprintf("outputs[%d].kind", i), "only one output of kind %q is allowed", o.kind)
		}
		seenKind[o.kind] = true
		if o.kind == OutputScores {
			p.scores = o
		}
		p.outputs = append(p.outputs, o)
	}
	return p
}

// rowWidth is the number of values one instance adds to an input of this shape.
func rowWidth(shape []int64) int {
	w := 1
	for _, d := range shape[1:] {
		w *= int(d)
	}
	return w
}

// readAsset reads one asset file named by field, folding its path and bytes into
// the fingerprint. It returns nil after recording a problem.
func (c *compiler) readAsset(field, name string, limit int64) []byte {
	if name == "" {
		c.probs.addf(field, "a file path is required")
		return nil
	}
	if !fs.ValidPath(name) {
		c.probs.addf(field, "%q is not a relative path inside the model version directory (no leading /, no ..)", name)
		return nil
	}
	if c.assets == nil {
		c.probs.addf(field, "%q: no asset directory was given to read it from", name)
		return nil
	}
	limit = min(limit, MaxAssetBytesTotal-c.assetBytes)
	b, err := readLimited(c.assets, name, limit)
	if err != nil {
		c.probs.addf(field, "%v (a spec may read at most %d bytes of assets in all)", err, MaxAssetBytesTotal)
		return nil
	}
	c.assetBytes += int64(len(b))
	c.h.Write([]byte("\x00" + name + "\x00"))
	c.h.Write(b)
	c.key.asset(name, b)
	return b
}

func readLimited(fsys fs.FS, name string, limit int64) ([]byte, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is over %d bytes", name, limit)
	}
	return b, nil
}

// lines splits a one-entry-per-line asset, dropping one trailing newline and any
// \r before each \n. Every line must be valid UTF-8.
func (c *compiler) lines(field, name string, b []byte, max int) []string {
	if len(b) == 0 {
		c.probs.addf(field, "%s is empty", name)
		return nil
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	n := bytes.Count(b, []byte("\n")) + 1
	if n > max {
		c.probs.addf(field, "%s has %d lines, at most %d", name, n, max)
		return nil
	}
	out := make([]string, 0, n)
	for i, l := range bytes.Split(b, []byte("\n")) {
		l = bytes.TrimSuffix(l, []byte("\r"))
		if !utf8.Valid(l) {
			c.probs.addf(field, "%s line %d is not valid UTF-8", name, i+1)
			return nil
		}
		out = append(out, string(l))
	}
	return out
}

func parseDType(s string) (tfpb.DataType, bool) {
	u := strings.ToUpper(strings.TrimSpace(s))
	u = strings.TrimPrefix(u, "DT_")
	switch u {
	case "FLOAT", "FLOAT32":
		return tfpb.DataType_DT_FLOAT, true
	case "DOUBLE", "FLOAT64":
		return tfpb.DataType_DT_DOUBLE, true
	case "INT32":
		return tfpb.DataType_DT_INT32, true
	case "INT64":
		return tfpb.DataType_DT_INT64, true
	}
	return tfpb.DataType_DT_INVALID, false
}

// tensorOut is a compiled TensorJSON: where one step's values go.
type tensorOut struct {
	name  string
	dtype tfpb.DataType
}

// compileTensor checks a tensor declaration: its input name, its dtype (one of
// allowed, def when omitted) and its shape, which must be [-1, width] (the
// default when omitted).
func (c *compiler) compileTensor(field string, t *TensorJSON, def tfpb.DataType, allowed []tfpb.DataType, width int, addInput func(InputSpec)) *tensorOut {
	out := &tensorOut{name: t.Input, dtype: def}
	if t.Input == "" {
		c.probs.addf(field+".input", "the TF input name (signature input key) is required")
	}
	if t.DType != "" {
		dt, ok := parseDType(t.DType)
		if !ok || !slices.Contains(allowed, dt) {
			c.probs.addf(field+".dtype", "got %q, want one of %s", t.DType, dtypeList(allowed))
		}
		out.dtype = dt
	}
	if t.Shape != nil {
		if len(t.Shape) != 2 || t.Shape[0] != -1 || t.Shape[1] != int64(width) {
			c.probs.addf(field+".shape", "got %v, want [-1, %d] (batch, width)", t.Shape, width)
		}
	}
	addInput(InputSpec{Name: t.Input, DType: out.dtype, Shape: []int64{-1, int64(width)}, Source: field})
	return out
}

func dtypeList(dts []tfpb.DataType) string {
	s := make([]string, len(dts))
	for i, d := range dts {
		s[i] = d.String()
	}
	return strings.Join(s, ", ")
}

func (c *compiler) compileText(t *TextJSON, addInput func(InputSpec)) *textStep {
	st := &textStep{
		form: norm.NFKC, useForm: true, caseFold: true,
		splitPunct: true, splitCJK: true,
		maxChars:   DefaultMaxCharsPerWord,
		allowEmpty: t.AllowEmpty,
		L:          t.MaxLength,
	}
	if n := t.Normalize; n != nil {
		if n.Form != nil {
			switch strings.ToUpper(*n.Form) {
			case "NFKC":
				st.form = norm.NFKC
			case "NFC":
				st.form = norm.NFC
			case "NFKD":
				st.form = norm.NFKD
			case "NFD":
				st.form = norm.NFD
			case "NONE":
				st.useForm = false
			default:
				c.probs.addf("text.normalize.form", "got %q, want NFKC, NFC, NFKD, NFD or none", *n.Form)
			}
		}
		if n.CaseFold != nil {
			st.caseFold = *n.CaseFold
		}
		st.stripAccents = n.StripAccents
	}
	if k := t.Tokenize; k != nil {
		if k.Punctuation != nil {
			st.splitPunct = *k.Punctuation
		}
		st.splitSymbols = k.Symbols
		if k.CJK != nil {
			st.splitCJK = *k.CJK
		}
	}
	if t.Strings != nil {
		c.compileStrings(t, st, addInput)
		return st
	}
	if t.MaxLength < 1 || t.MaxLength > MaxSeqLength {
		c.probs.addf("text.max_length", "got %d, want 1..%d", t.MaxLength, MaxSeqLength)
		st.L = 1
	}
	if len(t.PrefixTokens)+len(t.SuffixTokens) > maxAffixTokens {
		c.probs.addf("text.prefix_tokens", "at most %d prefix and suffix tokens together", maxAffixTokens)
	} else if t.MaxLength > 0 && len(t.PrefixTokens)+len(t.SuffixTokens) >= t.MaxLength {
		c.probs.addf("text.max_length", "%d leaves no room for text after %d prefix and suffix tokens", t.MaxLength, len(t.PrefixTokens)+len(t.SuffixTokens))
	}
	wp := t.WordPiece
	if wp == nil {
		c.probs.addf("text.wordpiece", "required: {\"vocab\": \"assets/vocab.txt\"}")
		wp = &WordPieceJSON{}
	}
	unk, cont := DefaultUnkToken, DefaultContinuation
	if wp.UnkToken != nil {
		unk = *wp.UnkToken
	}
	if wp.ContinuationPrefix != nil {
		cont = *wp.ContinuationPrefix
		if cont == "" {
			c.probs.addf("text.wordpiece.continuation_prefix", "must not be empty")
		}
	}
	if wp.MaxCharsPerWord != nil {
		st.maxChars = *wp.MaxCharsPerWord
		if st.maxChars < 1 || st.maxChars > MaxCharsPerWordCap {
			c.probs.addf("text.wordpiece.max_chars_per_word", "got %d, want 1..%d", st.maxChars, MaxCharsPerWordCap)
		}
	}
	if b := c.readAsset("text.wordpiece.vocab", wp.Vocab, MaxAssetBytes); b != nil {
		st.v = c.vocabs.get(vocabKey{sha256.Sum256(b), cont}, func() *wordVocab {
			if toks := c.lines("text.wordpiece.vocab", wp.Vocab, b, MaxVocabEntries); toks != nil {
				return newWordVocab(toks, cont)
			}
			return nil
		})
	}
	lookup := func(field, tok string) int64 {
		if st.v == nil {
			return 0 // the vocabulary failed to load; already reported
		}
		id, ok := st.v.id(tok)
		if !ok {
			c.probs.addf(field, "token %q is not in the vocabulary %s", tok, wp.Vocab)
		}
		return int64(id)
	}
	st.unk = lookup("text.wordpiece.unk_token", unk)
	pad := DefaultPadToken
	if t.PadToken != nil {
		pad = *t.PadToken
	}
	st.pad = lookup("text.pad_token", pad)
	for i, tok := range t.PrefixTokens {
		st.prefix = append(st.prefix, lookup(fmt.Sprintf("text.prefix_tokens[%d]", i), tok))
	}
	for i, tok := range t.SuffixTokens {
		st.suffix = append(st.suffix, lookup(fmt.Sprintf("text.suffix_tokens[%d]", i), tok))
	}
	ints := []tfpb.DataType{tfpb.DataType_DT_INT64, tfpb.DataType_DT_INT32}
	if t.TokenIDs == nil {
		c.probs.addf("text.token_ids", "required: {\"input\": \"input_ids\", \"dtype\": \"DT_INT64\", \"shape\": [-1, %d]}", t.MaxLength)
	} else {
		st.ids = c.compileTensor("text.token_ids", t.TokenIDs, tfpb.DataType_DT_INT64, ints, st.L, addInput)
	}
	if t.AttentionMask != nil {
		st.mask = c.compileTensor("text.attention_mask", t.AttentionMask, tfpb.DataType_DT_INT64,
			append(ints, tfpb.DataType_DT_FLOAT), st.L, addInput)
	}
	if t.TokenTypeIDs != nil {
		st.types = c.compileTensor("text.token_type_ids", t.TokenTypeIDs, tfpb.DataType_DT_INT64, ints, st.L, addInput)
	}
	return st
}

// compileStrings compiles text.strings: the normalized text itself as a
// DT_STRING input, for models that tokenize inside their graph.
func (c *compiler) compileStrings(t *TextJSON, st *textStep, addInput func(InputSpec)) {
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"tokenize", t.Tokenize != nil}, {"wordpiece", t.WordPiece != nil}, {"max_length", t.MaxLength != 0},
		{"prefix_tokens", t.PrefixTokens != nil}, {"suffix_tokens", t.SuffixTokens != nil}, {"pad_token", t.PadToken != nil},
		{"token_ids", t.TokenIDs != nil}, {"attention_mask", t.AttentionMask != nil}, {"token_type_ids", t.TokenTypeIDs != nil},
	} {
		if f.set {
			c.probs.addf("text."+f.name, "not allowed with text.strings (the model tokenizes in its graph); remove one of them")
		}
	}
	sj := t.Strings
	st.strs = &tensorOut{name: sj.Input, dtype: tfpb.DataType_DT_STRING}
	if sj.Input == "" {
		c.probs.addf("text.strings.input", "the TF input name (signature input key) is required")
	}
	if dt, ok := parseStringDType(sj.DType); !ok {
		c.probs.addf("text.strings.dtype", "got %q, want DT_STRING", sj.DType)
	} else {
		st.strs.dtype = dt
	}
	shape := []int64{-1}
	switch {
	case sj.Shape == nil || slices.Equal(sj.Shape, []int64{-1}):
	case slices.Equal(sj.Shape, []int64{-1, 1}):
		shape = []int64{-1, 1}
	default:
		c.probs.addf("text.strings.shape", "got %v, want [-1] or [-1, 1]", sj.Shape)
	}
	st.strsShape = shape
	addInput(InputSpec{Name: sj.Input, DType: tfpb.DataType_DT_STRING, Shape: shape, Source: "text.strings"})
}

func parseStringDType(s string) (tfpb.DataType, bool) {
	switch strings.ToUpper(strings.TrimSpace(s)) {
	case "", "DT_STRING", "STRING":
		return tfpb.DataType_DT_STRING, true
	}
	return tfpb.DataType_DT_INVALID, false
}

func (c *compiler) compileGroup(field string, g *GroupJSON, addInput func(InputSpec)) *group {
	out := &group{input: g.Input, dtype: tfpb.DataType_DT_FLOAT}
	if len(g.Numeric)+len(g.Categorical) == 0 {
		c.probs.addf(field, "declare at least one numeric or categorical feature")
	}
	if len(g.Numeric)+len(g.Categorical) > maxFeaturesPerGroup {
		c.probs.addf(field, "at most %d features per group", maxFeaturesPerGroup)
		return out
	}
	for i := range g.Numeric {
		out.numeric = append(out.numeric, c.compileNumeric(fmt.Sprintf("%s.numeric[%d]", field, i), &g.Numeric[i]))
	}
	for i := range g.Categorical {
		out.categorical = append(out.categorical, c.compileCategorical(fmt.Sprintf("%s.categorical[%d]", field, i), &g.Categorical[i]))
	}
	// Width: the declared shape, else the end of the last slot used.
	end := 0
	for _, f := range out.numeric {
		end = max(end, f.slot+1)
	}
	for _, f := range out.categorical {
		end = max(end, f.slot+f.slots())
	}
	out.width = end
	if len(g.Shape) == 2 && g.Shape[0] == -1 && g.Shape[1] > 0 && g.Shape[1] <= MaxFeatureWidth {
		out.width = int(g.Shape[1])
	} else if g.Shape != nil {
		c.probs.addf(field+".shape", "got %v, want [-1, D] with 1 <= D <= %d", g.Shape, MaxFeatureWidth)
	}
	c.width += out.width
	if out.width > MaxFeatureWidth || c.width > MaxFeatureWidth {
		c.probs.addf(field, "features use %d slots (%d in all groups), at most %d", out.width, c.width, MaxFeatureWidth)
		out.width = 0
	}
	allowed := []tfpb.DataType{tfpb.DataType_DT_FLOAT, tfpb.DataType_DT_DOUBLE}
	if len(out.numeric) == 0 {
		allowed = append(allowed, tfpb.DataType_DT_INT64, tfpb.DataType_DT_INT32)
	}
	t := c.compileTensor(field, &TensorJSON{Input: g.Input, DType: g.DType}, tfpb.DataType_DT_FLOAT, allowed, out.width, addInput)
	out.dtype = t.dtype
	// Every slot is fed by exactly one feature: overlaps and gaps are spec bugs.
	if out.width > 0 {
		// owner[s] is 1 + the index in names of the feature using slot s.
		owner := make([]int32, out.width)
		var names []string
		claim := func(name string, from, n int) {
			names = append(names, name)
			for s := from; s < from+n; s++ {
				if s < 0 || s >= out.width {
					c.probs.addf(field, "feature %q uses slot %d, outside [0, %d)", name, s, out.width)
					return
				}
				if owner[s] != 0 {
					c.probs.addf(field, "slot %d is used by both %q and %q", s, names[owner[s]-1], name)
					return
				}
				owner[s] = int32(len(names))
			}
		}
		for _, f := range out.numeric {
			claim(f.name, f.slot, 1)
		}
		for _, f := range out.categorical {
			claim(f.name, f.slot, f.slots())
		}
		for s, o := range owner {
			if o == 0 {
				c.probs.addf(field, "slot %d of input %q is fed by no feature", s, g.Input)
				break
			}
		}
	}
	return out
}

func (c *compiler) compileNumeric(field string, n *NumericJSON) numFeature {
	f := numFeature{name: n.Name, mean: n.Mean, std: 1}
	if n.Name == "" {
		c.probs.addf(field+".name", "required")
	}
	if n.Slot == nil {
		c.probs.addf(field+".slot", "required: the index in the input's second dimension")
	} else {
		f.slot = *n.Slot
	}
	if n.Std != nil {
		f.std = *n.Std
		if !(f.std > 0) || math.IsInf(f.std, 0) {
			c.probs.addf(field+".std", "got %v, want a positive finite number", f.std)
			f.std = 1
		}
	}
	if math.IsInf(f.mean, 0) {
		c.probs.addf(field+".mean", "must be finite")
	}
	if n.Default != nil {
		f.hasDefault, f.def = true, *n.Default
	}
	return f
}

func (c *compiler) compileCategorical(field string, cj *CategoricalJSON) catFeature {
	f := catFeature{name: cj.Name, oov: cj.OOVBuckets, oneHot: true}
	if cj.Name == "" {
		c.probs.addf(field+".name", "required")
	}
	if cj.Slot == nil {
		c.probs.addf(field+".slot", "required: the first index in the input's second dimension")
	} else {
		f.slot = *cj.Slot
	}
	switch cj.Encoding {
	case "", "one_hot":
	case "index":
		f.oneHot = false
	default:
		c.probs.addf(field+".encoding", "got %q, want one_hot (default) or index", cj.Encoding)
	}
	var vocab []string
	switch {
	case cj.VocabFile != "" && cj.Vocab != nil:
		c.probs.addf(field, "give vocab or vocab_file, not both")
	case cj.VocabFile != "":
		if b := c.readAsset(field+".vocab_file", cj.VocabFile, MaxAssetBytes); b != nil {
			vocab = c.lines(field+".vocab_file", cj.VocabFile, b, MaxVocabEntries)
		}
	default:
		vocab = cj.Vocab
	}
	hasVocab := cj.VocabFile != "" || cj.Vocab != nil
	if cj.OOVBuckets < 0 || cj.OOVBuckets > MaxHashBuckets {
		c.probs.addf(field+".oov_buckets", "got %d, want 0..%d", cj.OOVBuckets, MaxHashBuckets)
		f.oov = 0
	}
	switch {
	case hasVocab && cj.HashBuckets != 0:
		c.probs.addf(field+".hash_buckets", "give a vocabulary (with oov_buckets) or hash_buckets, not both")
	case hasVocab:
		if len(vocab) == 0 && cj.VocabFile == "" {
			c.probs.addf(field+".vocab", "must not be empty")
		}
		if len(vocab) > MaxVocabEntries {
			c.probs.addf(field+".vocab", "%d entries, at most %d", len(vocab), MaxVocabEntries)
			vocab = nil
		}
		f.vocab = make(map[string]int, len(vocab))
		for i, v := range vocab {
			if _, dup := f.vocab[v]; dup {
				c.probs.addf(field+".vocab", "value %q appears twice", v)
				continue
			}
			f.vocab[v] = i
		}
		f.vocabLen = len(vocab)
	case cj.HashBuckets > 0 && cj.HashBuckets <= MaxHashBuckets:
		f.hash = cj.HashBuckets
		if cj.OOVBuckets != 0 {
			c.probs.addf(field+".oov_buckets", "only with a vocabulary; hash_buckets already covers every value")
		}
	case cj.HashBuckets != 0:
		c.probs.addf(field+".hash_buckets", "got %d, want 1..%d", cj.HashBuckets, MaxHashBuckets)
		f.hash = 1
	default:
		c.probs.addf(field, "give vocab, vocab_file or hash_buckets")
		f.hash = 1
	}
	if cj.Default != nil {
		f.hasDefault, f.def = true, *cj.Default
		if f.vocab != nil && f.oov == 0 {
			if _, ok := f.vocab[f.def]; !ok {
				c.probs.addf(field+".default", "%q is not in the vocabulary and there are no oov_buckets", f.def)
			}
		}
	}
	return f
}

func (c *compiler) compileOutput(field string, o *OutputJSON) *outputStep {
	st := &outputStep{name: o.Output, kind: OutputKind(o.Kind), activation: o.Activation}
	if o.Output == "" {
		c.probs.addf(field+".output", "the TF output name (signature output key) is required")
	}
	switch st.kind {
	case OutputScores, OutputValues, OutputEmbedding:
	default:
		c.probs.addf(field+".kind", "got %q, want scores, values or embedding", o.Kind)
	}
	switch o.Activation {
	case "":
		st.activation = ActivationNone
	case ActivationNone, ActivationSoftmax, ActivationSigmoid:
		if st.kind != OutputScores && o.Activation != ActivationNone {
			c.probs.addf(field+".activation", "only scores outputs take an activation")
		}
	default:
		c.probs.addf(field+".activation", "got %q, want none, softmax or sigmoid", o.Activation)
	}
	if (o.Labels != "" || o.LabelNames != nil) && st.kind != OutputScores {
		c.probs.addf(field+".labels", "only scores outputs have labels")
	}
	switch {
	case o.Labels != "" && o.LabelNames != nil:
		c.probs.addf(field, "give labels (a file) or label_names, not both")
	case o.Labels != "":
		if b := c.readAsset(field+".labels", o.Labels, MaxAssetBytes); b != nil {
			st.labels = c.lines(field+".labels", o.Labels, b, MaxLabels)
		}
	case o.LabelNames != nil:
		if len(o.LabelNames) == 0 || len(o.LabelNames) > MaxLabels {
			c.probs.addf(field+".label_names", "want 1..%d names", MaxLabels)
		}
		st.labels = o.LabelNames
	}
	return st
}
