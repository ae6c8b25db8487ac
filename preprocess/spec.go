package preprocess

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"
)

// SpecPath is where a model version directory holds its preprocessing spec.
const SpecPath = "assets.extra/tfgate-preprocess.json"

// Format is the only spec format this package reads; a spec names it in "format".
const Format = "tfgate-preprocess/v1"

// Hard caps on what a spec may declare, so that no spec can make Encode allocate
// without bound. They are far above what real models use.
const (
	MaxSpecBytes       = 1 << 20   // the spec JSON itself
	MaxAssetBytes      = 64 << 20  // one vocabulary or labels file
	MaxVocabEntries    = 4 << 20   // lines in a vocabulary file
	MaxLabels          = 1 << 20   // lines in a labels file
	MaxSeqLength       = 1 << 14   // text.max_length
	MaxFeatureWidth    = 1 << 20   // feature slots, summed over all feature inputs
	MaxFeatureGroups   = 64        // entries of "features"
	MaxAssetBytesTotal = 256 << 20 // all assets one spec reads
	MaxInstancesCap    = 1 << 16   // limits.max_instances
	MaxTextBytesCap    = 1 << 22   // limits.max_text_bytes
	MaxHashBuckets     = 1 << 20   // hash_buckets and oov_buckets
	MaxCharsPerWordCap = 1 << 10   // text.wordpiece.max_chars_per_word
	// MaxElementsPerRequest bounds max_instances times the summed widths of all
	// inputs: the most values one Encode call can produce.
	MaxElementsPerRequest = 1 << 24
	maxAffixTokens        = 16 // prefix_tokens + suffix_tokens
	maxFeaturesPerGroup   = 1 << 14
)

// Defaults applied to fields a spec leaves out.
const (
	DefaultMaxInstances    = 256
	DefaultMaxTextBytes    = 16 << 10
	DefaultUnkToken        = "[UNK]"
	DefaultPadToken        = "[PAD]"
	DefaultContinuation    = "##"
	DefaultMaxCharsPerWord = 100
)

// SpecJSON is the on-disk spec, exported so that tools writing specs (such as
// internal/modelgen) use this schema instead of re-declaring it. Pointers mark
// optional fields whose default is not the zero value; omitempty only keeps the
// fields a writer left out out of its JSON, decoding ignores it. doc.go documents
// every field; keep the two in step. Parse, not these types, validates a spec.
type SpecJSON struct {
	Format      string            `json:"format"`
	Description string            `json:"description,omitempty"`
	Limits      *LimitsJSON       `json:"limits,omitempty"`
	Text        *TextJSON         `json:"text,omitempty"`
	Features    []GroupJSON       `json:"features,omitempty"`
	Outputs     []OutputJSON      `json:"outputs"`
	Metadata    map[string]string `json:"metadata,omitempty"`
}

// LimitsJSON is a spec's "limits".
type LimitsJSON struct {
	MaxInstances *int `json:"max_instances,omitempty"`
	MaxTextBytes *int `json:"max_text_bytes,omitempty"`
}

// TextJSON is a spec's "text": the text pipeline of a text model.
type TextJSON struct {
	Normalize     *NormalizeJSON `json:"normalize,omitempty"`
	Tokenize      *TokenizeJSON  `json:"tokenize,omitempty"`
	WordPiece     *WordPieceJSON `json:"wordpiece,omitempty"`
	MaxLength     int            `json:"max_length"`
	PrefixTokens  []string       `json:"prefix_tokens,omitempty"`
	SuffixTokens  []string       `json:"suffix_tokens,omitempty"`
	PadToken      *string        `json:"pad_token,omitempty"`
	AllowEmpty    bool           `json:"allow_empty,omitempty"`
	TokenIDs      *TensorJSON    `json:"token_ids,omitempty"`
	AttentionMask *TensorJSON    `json:"attention_mask,omitempty"`
	TokenTypeIDs  *TensorJSON    `json:"token_type_ids,omitempty"`
	Strings       *TensorJSON    `json:"strings,omitempty"`
}

// NormalizeJSON is "text.normalize".
type NormalizeJSON struct {
	Form         *string `json:"form,omitempty"`
	CaseFold     *bool   `json:"case_fold,omitempty"`
	StripAccents bool    `json:"strip_accents,omitempty"`
}

// TokenizeJSON is "text.tokenize".
type TokenizeJSON struct {
	Punctuation *bool `json:"punctuation,omitempty"`
	Symbols     bool  `json:"symbols,omitempty"`
	CJK         *bool `json:"cjk,omitempty"`
}

// WordPieceJSON is "text.wordpiece".
type WordPieceJSON struct {
	Vocab              string  `json:"vocab"`
	UnkToken           *string `json:"unk_token,omitempty"`
	ContinuationPrefix *string `json:"continuation_prefix,omitempty"`
	MaxCharsPerWord    *int    `json:"max_chars_per_word,omitempty"`
}

// TensorJSON names one model input a step fills: "text.token_ids" and the like.
type TensorJSON struct {
	Input string  `json:"input"`
	DType string  `json:"dtype,omitempty"`
	Shape []int64 `json:"shape,omitempty"`
}

// GroupJSON is one entry of "features": the features packed into one input.
type GroupJSON struct {
	Input       string            `json:"input"`
	DType       string            `json:"dtype,omitempty"`
	Shape       []int64           `json:"shape,omitempty"`
	Numeric     []NumericJSON     `json:"numeric,omitempty"`
	Categorical []CategoricalJSON `json:"categorical,omitempty"`
}

// NumericJSON is one numeric feature of a GroupJSON.
type NumericJSON struct {
	Name    string   `json:"name"`
	Slot    *int     `json:"slot,omitempty"`
	Mean    float64  `json:"mean,omitempty"`
	Std     *float64 `json:"std,omitempty"`
	Default *float64 `json:"default,omitempty"`
}

// CategoricalJSON is one categorical feature of a GroupJSON.
type CategoricalJSON struct {
	Name        string   `json:"name"`
	Slot        *int     `json:"slot,omitempty"`
	Encoding    string   `json:"encoding,omitempty"`
	Vocab       []string `json:"vocab,omitempty"`
	VocabFile   string   `json:"vocab_file,omitempty"`
	OOVBuckets  int      `json:"oov_buckets,omitempty"`
	HashBuckets int      `json:"hash_buckets,omitempty"`
	Default     *string  `json:"default,omitempty"`
}

// OutputJSON is one entry of "outputs": how one model output is decoded.
type OutputJSON struct {
	Output     string   `json:"output"`
	Kind       string   `json:"kind"`
	Activation string   `json:"activation,omitempty"`
	Labels     string   `json:"labels,omitempty"`
	LabelNames []string `json:"label_names,omitempty"`
}

// decodeSpec parses spec JSON, reporting every unknown field with its path, then
// the first type error with its path. Semantic validation happens in compile.
func decodeSpec(b []byte) (*SpecJSON, error) {
	if len(b) > MaxSpecBytes {
		return nil, fmt.Errorf("%w: spec is %d bytes, at most %d", ErrSpec, len(b), MaxSpecBytes)
	}
	var generic any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&generic); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrSpec, jsonErr(b, err))
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the spec object", ErrSpec)
	}
	if _, ok := generic.(map[string]any); !ok {
		return nil, fmt.Errorf("%w: the spec must be a JSON object", ErrSpec)
	}
	var probs problems
	unknownFields(generic, reflect.TypeFor[SpecJSON](), "", &probs)
	if err := probs.err(); err != nil {
		return nil, err
	}
	var s SpecJSON
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrSpec, jsonErr(b, err))
	}
	return &s, nil
}

// jsonErr turns encoding/json errors into messages that name a line or a field.
func jsonErr(b []byte, err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		line, col := lineCol(b, se.Offset)
		return fmt.Sprintf("invalid JSON at line %d, column %d: %v", line, col, se)
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			field = "(top level)"
		}
		return fmt.Sprintf("%s: got JSON %s, want %s", field, te.Value, goTypeWord(te.Type))
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "invalid JSON: unexpected end of input"
	}
	return err.Error()
}

func goTypeWord(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int64, reflect.Float64:
		if t.Kind() == reflect.Float64 {
			return "a number"
		}
		return "an integer"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	}
	return t.String()
}

func lineCol(b []byte, off int64) (int, int) {
	if off > int64(len(b)) {
		off = int64(len(b))
	}
	line, col := 1, 1
	for _, c := range b[:off] {
		if c == '\n' {
			line++
			col = 1
		} else {
			col++
		}
	}
	return line, col
}

// unknownFields walks a generic JSON value against the struct type that will decode
// it and records each object key the type does not declare, with its path.
func unknownFields(v any, t reflect.Type, path string, probs *problems) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		obj, ok := v.(map[string]any)
		if !ok {
			return // a type error; json.Unmarshal reports it with the path
		}
		fields := map[string]reflect.Type{}
		var names []string
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "-" {
				continue
			}
			fields[name] = f.Type
			names = append(names, name)
		}
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ft, ok := fields[k]
			if !ok {
				probs.addf(join(path, k), "unknown field; known fields here: %s", strings.Join(names, ", "))
				continue
			}
			unknownFields(obj[k], ft, join(path, k), probs)
		}
	case reflect.Slice:
		arr, ok := v.([]any)
		if !ok {
			return
		}
		for i, e := range arr {
			unknownFields(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i), probs)
		}
	}
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// problems collects every validation problem of a spec, each with its field path.
type problems struct{ list []string }

func (p *problems) addf(field, format string, args ...any) {
	if len(p.list) >= 50 {
		if len(p.list) == 50 {
			p.list = append(p.list, "... (more problems not shown)")
		}
		return
	}
	msg := fmt.Sprintf(format, args...)
	if field != "" {
		msg = field + ": " + msg
	}
	p.list = append(p.list, msg)
}

func (p *problems) err() error {
	if len(p.list) == 0 {
		return nil
	}
	if len(p.list) == 1 {
		return fmt.Errorf("%w: %s", ErrSpec, p.list[0])
	}
	return fmt.Errorf("%w: %d problems:\n  %s", ErrSpec, len(p.list), strings.Join(p.list, "\n  "))
}
