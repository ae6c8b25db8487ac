package modelgen

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tfgate/tfgate/internal/servingsim/model"
)

// ErrSpec reports an unusable Spec.
var ErrSpec = errors.New("invalid modelgen spec")

// Spec describes a model version to write. Zero fields take the defaults noted.
type Spec struct {
	// Kind is model.KindTextClassifier, model.KindLinear or model.KindRegressor. Required.
	Kind string
	// VocabSize (text-classifier): default 5000, at least MinVocabSize.
	VocabSize int
	// MaxLen (text-classifier): sequence length L, default 32.
	MaxLen int
	// Classes (text-classifier, linear): default 8 for text-classifier, 2 for linear.
	Classes int
	// EmbeddingDim (text-classifier): default 16.
	EmbeddingDim int
	// Features (linear, regressor): D, default 8.
	Features int
	// FeatureNames, when set, name the D features (len must equal Features);
	// default f0..f{D-1}.
	FeatureNames []string
	// Seed derives weights and the vocabulary. Default 0.
	Seed int64
	// Cost is the simulated compute cost written into the spec. Default zero.
	Cost model.Cost
	// Signatures lists the signature keys to declare (all identical); default
	// ["serving_default"].
	Signatures []string
}

// WithDefaults returns s with every zero field set to its default.
func (s Spec) WithDefaults() Spec {
	switch s.Kind {
	case model.KindTextClassifier:
		s.VocabSize = or(s.VocabSize, 5000)
		s.MaxLen = or(s.MaxLen, 32)
		s.Classes = or(s.Classes, 8)
		s.EmbeddingDim = or(s.EmbeddingDim, 16)
	case model.KindLinear:
		s.Features = or(s.Features, 8)
		s.Classes = or(s.Classes, 2)
	case model.KindRegressor:
		s.Features = or(s.Features, 8)
	}
	if len(s.Signatures) == 0 {
		s.Signatures = []string{model.DefaultSignature}
	}
	return s
}

func or(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// ModelSpec returns the servingsim.json content for s (after defaults).
func (s Spec) ModelSpec() (*model.Spec, error) {
	s = s.WithDefaults()
	p := model.Params{}
	switch s.Kind {
	case model.KindTextClassifier:
		p = model.Params{VocabSize: s.VocabSize, MaxLen: s.MaxLen, EmbeddingDim: s.EmbeddingDim, Classes: s.Classes}
		if s.VocabSize < MinVocabSize {
			return nil, fmt.Errorf("%w: vocab size %d is below the minimum %d (special tokens, letters, digits and their ## pieces)", ErrSpec, s.VocabSize, MinVocabSize)
		}
	case model.KindLinear:
		p = model.Params{Features: s.Features, Classes: s.Classes}
	case model.KindRegressor:
		p = model.Params{Features: s.Features}
	}
	if s.FeatureNames != nil && len(s.FeatureNames) != s.Features {
		return nil, fmt.Errorf("%w: %d feature names for %d features", ErrSpec, len(s.FeatureNames), s.Features)
	}
	sig, err := model.Expected(s.Kind, p)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSpec, err)
	}
	ms := &model.Spec{FormatVersion: model.FormatVersion, Kind: s.Kind, Seed: s.Seed, Params: p,
		Signatures: map[string]model.SignatureSpec{}, Cost: s.Cost}
	for _, k := range s.Signatures {
		ms.Signatures[k] = sig
	}
	if err := ms.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSpec, err)
	}
	return ms, nil
}

// Files returns every file of the version directory, by slash-separated relative
// path. Directories are implied by the paths, plus "variables/" which is empty.
func Files(spec Spec) (map[string][]byte, error) {
	spec = spec.WithDefaults()
	ms, err := spec.ModelSpec()
	if err != nil {
		return nil, err
	}
	js, err := ms.Marshal()
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{
		"saved_model.pb": placeholderSavedModel,
		model.SpecPath:   js,
	}
	switch spec.Kind {
	case model.KindTextClassifier:
		files["assets/vocab.txt"] = lines(Vocab(spec.VocabSize, spec.Seed))
		files["assets/labels.txt"] = lines(Labels(spec.Classes))
	case model.KindLinear, model.KindRegressor:
		names := spec.FeatureNames
		if names == nil {
			for i := range spec.Features {
				names = append(names, fmt.Sprintf("f%d", i))
			}
		}
		files["assets/features.txt"] = lines(names)
		if spec.Kind == model.KindLinear {
			files["assets/labels.txt"] = lines(Labels(spec.Classes))
		}
	}
	if err := writeExtras(files, spec); err != nil {
		return nil, err
	}
	return files, nil
}

// placeholderSavedModel stands where TensorFlow's SavedModel protobuf would be.
// The simulator only checks that it exists.
var placeholderSavedModel = []byte("servingsim placeholder: this model is described by assets.extra/servingsim.json\n")

func lines(ss []string) []byte { return []byte(strings.Join(ss, "\n") + "\n") }

// Export writes a version directory at dir (created if missing; existing files
// with the same names are replaced). To publish a version atomically, Export to a
// non-numeric temporary name beside the final one and rename it into place.
func Export(dir string, spec Spec) error {
	files, err := Files(spec)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "variables"), 0o755); err != nil {
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, files[name], 0o644); err != nil {
			return err
		}
	}
	return nil
}

// ExportTarGz writes the version as a gzip-compressed tar whose entries are
// relative to the version directory: directories first, then files, sorted,
// with a fixed modification time so archives are reproducible.
func ExportTarGz(w io.Writer, spec Spec) error {
	files, err := Files(spec)
	if err != nil {
		return err
	}
	return WriteTarGz(w, files)
}

// WriteTarGz writes files (a version directory's relative paths and contents,
// as [Files] returns them) as ExportTarGz lays them out.
func WriteTarGz(w io.Writer, files map[string][]byte) error {
	zw := gzip.NewWriter(w)
	tw := tar.NewWriter(zw)
	mtime := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	dirs := map[string]bool{"variables/": true}
	for name := range files {
		for d := filepath.ToSlash(filepath.Dir(name)); d != "."; d = filepath.ToSlash(filepath.Dir(d)) {
			dirs[d+"/"] = true
		}
	}
	for _, d := range slices.Sorted(maps.Keys(dirs)) {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return err
		}
	}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		b := files[name]
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return err
		}
		if _, err := tw.Write(b); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}
