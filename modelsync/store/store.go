package store

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tfgate/tfgate/internal/atomicfile"
)

// Sentinel errors.
var (
	// ErrExists: Commit found the version already published; nothing was changed.
	ErrExists = errors.New("version already published")
	// ErrBadName: a model name or version is not usable as a directory name.
	ErrBadName = errors.New("bad model name or version")
)

const (
	tmpPrefix = ".tmp-"
	delPrefix = ".del-"
)

// Source records what a published version was built from.
type Source struct {
	Bucket      string    `json:"bucket,omitempty"`
	Key         string    `json:"key,omitempty"`
	SHA256      string    `json:"sha256,omitempty"`
	ETag        string    `json:"etag,omitempty"`
	Size        int64     `json:"size"`
	PublishedAt time.Time `json:"published_at"`
}

// Store is a model base path.
type Store struct {
	base string
	sync bool
}

// New opens (creating if needed) the base path. sync false skips fsyncs (tests, benchmarks
// of everything else).
func New(base string, sync bool) (*Store, error) {
	if err := checkPlatform(); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(base)
	if err != nil {
		return nil, fmt.Errorf("base path %q: %w", base, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("create base path: %w", err)
	}
	return &Store{base: abs, sync: sync}, nil
}

// Base is the absolute base path.
func (s *Store) Base() string { return s.base }

// ModelDir is <base>/<model>.
func (s *Store) ModelDir(model string) string { return filepath.Join(s.base, model) }

// CheckModel reports whether model is usable as a single directory name: one path
// component of at most 255 bytes, not starting with '.', of printable UTF-8 (no
// control characters, newlines or invalid bytes, which would end up in directory
// listings, logs and TF Serving's config).
func CheckModel(model string) error {
	if model == "" || model == "." || model == ".." || strings.HasPrefix(model, ".") ||
		strings.ContainsAny(model, "/\\\x00") || len(model) > 255 {
		return fmt.Errorf("%w: model %q must be one path component not starting with '.'", ErrBadName, model)
	}
	if !utf8.ValidString(model) {
		return fmt.Errorf("%w: model %q is not valid UTF-8", ErrBadName, model)
	}
	for _, r := range model {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%w: model %q contains the non-printable character %U", ErrBadName, model, r)
		}
	}
	return nil
}

func vname(v int64) string { return strconv.FormatInt(v, 10) }

// VersionDir is <base>/<model>/<version>.
func (s *Store) VersionDir(model string, v int64) string {
	return filepath.Join(s.base, model, vname(v))
}

func (s *Store) markerPath(model string, v int64) string {
	return filepath.Join(s.base, model, "."+vname(v)+".source.json")
}

// Models lists the model directories under the base path.
func (s *Store) Models() ([]string, error) {
	ents, err := os.ReadDir(s.base)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && CheckModel(e.Name()) == nil {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// Versions lists the published versions of model, ascending, as TF Serving sees them:
// children whose name parses as an int64.
func (s *Store) Versions(model string) ([]int64, error) {
	ents, err := os.ReadDir(s.ModelDir(model))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []int64
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		if v, err := strconv.ParseInt(e.Name(), 10, 64); err == nil && v >= 0 {
			out = append(out, v)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

// Lookup reports whether version v of model is published, and its source marker when it
// has one (ok true, marker nil: published by something else).
func (s *Store) Lookup(model string, v int64) (ok bool, src *Source, err error) {
	fi, err := os.Stat(s.VersionDir(model, v))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil, nil
	}
	if err != nil {
		return false, nil, err
	}
	if !fi.IsDir() {
		return false, nil, fmt.Errorf("%s is not a directory", s.VersionDir(model, v))
	}
	b, err := os.ReadFile(s.markerPath(model, v))
	if errors.Is(err, os.ErrNotExist) {
		return true, nil, nil
	}
	if err != nil {
		return true, nil, err
	}
	var m Source
	if err := json.Unmarshal(b, &m); err != nil {
		return true, nil, nil // a damaged marker says nothing; treat as unknown origin
	}
	return true, &m, nil
}

// Pending is a version being written.
type Pending struct {
	s     *Store
	model string
	v     int64
	dir   string
	// newModel: Begin created the model directory, so Abort removes it again (when
	// nothing else has appeared in it): a rejected archive leaves no empty model
	// directory behind.
	newModel bool
}

func randHex() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Begin creates the temporary directory for version v of model.
func (s *Store) Begin(model string, v int64) (*Pending, error) {
	if err := CheckModel(model); err != nil {
		return nil, err
	}
	if v < 0 {
		return nil, fmt.Errorf("%w: negative version %d", ErrBadName, v)
	}
	md := s.ModelDir(model)
	newModel := false
	if err := os.Mkdir(md, 0o755); err == nil {
		newModel = true
	} else if !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("create model directory: %w", err)
	}
	dir := filepath.Join(md, tmpPrefix+vname(v)+"-"+randHex())
	if err := os.Mkdir(dir, 0o755); err != nil {
		if newModel {
			os.Remove(md)
		}
		return nil, fmt.Errorf("create temporary directory: %w", err)
	}
	return &Pending{s: s, model: model, v: v, dir: dir, newModel: newModel}, nil
}

// Dir is the temporary directory to fill.
func (p *Pending) Dir() string { return p.dir }

// Abort removes the temporary directory, and the model directory when Begin created
// it and it is empty again.
func (p *Pending) Abort() error {
	err := os.RemoveAll(p.dir)
	if p.newModel {
		_ = os.Remove(p.s.ModelDir(p.model)) // fails, harmlessly, unless empty
	}
	return err
}

// Commit publishes the temporary directory as the version. The caller has fsynced its
// content (extract.Options.Sync). ErrExists: the version appeared meanwhile; the
// temporary directory is removed and the existing version left untouched.
func (p *Pending) Commit(src Source) error {
	s := p.s
	b, err := json.Marshal(src)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(s.markerPath(p.model, p.v), b, 0o644, s.sync); err != nil {
		p.Abort()
		return fmt.Errorf("write source marker: %w", err)
	}
	if s.sync {
		if err := atomicfile.SyncDir(p.dir); err != nil {
			p.Abort()
			return err
		}
	}
	final := s.VersionDir(p.model, p.v)
	if err := renameNoReplace(p.dir, final); err != nil {
		p.Abort()
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%w: %s", ErrExists, final)
		}
		return fmt.Errorf("rename into place: %w", err)
	}
	if s.sync {
		if err := atomicfile.SyncDir(s.ModelDir(p.model)); err != nil {
			return err
		}
		if err := atomicfile.SyncDir(s.base); err != nil {
			return err
		}
	}
	return nil
}

// Remove unpublishes version v of model: one rename out of the poller's view, then delete.
func (s *Store) Remove(model string, v int64) error {
	if err := CheckModel(model); err != nil {
		return err
	}
	md := s.ModelDir(model)
	gone := filepath.Join(md, delPrefix+vname(v)+"-"+randHex())
	if err := os.Rename(s.VersionDir(model, v), gone); err != nil {
		return fmt.Errorf("unpublish %s/%d: %w", model, v, err)
	}
	if s.sync {
		if err := atomicfile.SyncDir(md); err != nil {
			return err
		}
	}
	if err := os.Remove(s.markerPath(model, v)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return os.RemoveAll(gone)
}

// CleanStale removes temporary and half-removed directories left by a crash, returning
// their paths.
func (s *Store) CleanStale() ([]string, error) {
	models, err := s.Models()
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, m := range models {
		ents, err := os.ReadDir(s.ModelDir(m))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, e := range ents {
			n := e.Name()
			if strings.HasPrefix(n, tmpPrefix) || strings.HasPrefix(n, delPrefix) ||
				(strings.HasPrefix(n, ".") && strings.Contains(n, ".source.json.tmp")) {
				p := filepath.Join(s.ModelDir(m), n)
				if err := os.RemoveAll(p); err != nil {
					errs = append(errs, err)
					continue
				}
				removed = append(removed, p)
			}
		}
		// A model directory that held nothing but leftovers was created for a version
		// that never got published: remove it too (os.Remove leaves a non-empty one).
		if len(ents) > 0 && os.Remove(s.ModelDir(m)) == nil {
			removed = append(removed, s.ModelDir(m))
		}
	}
	return removed, errors.Join(errs...)
}

// Retain removes the oldest versions of model beyond the newest keep, never one for which
// pinned returns true. keep <= 0 keeps everything. It returns the removed versions.
func (s *Store) Retain(model string, keep int, pinned func(model string, v int64) bool) ([]int64, error) {
	if keep <= 0 {
		return nil, nil
	}
	vs, err := s.Versions(model)
	if err != nil || len(vs) <= keep {
		return nil, err
	}
	var removed []int64
	var errs []error
	for _, v := range vs[:len(vs)-keep] {
		if pinned != nil && pinned(model, v) {
			continue
		}
		if err := s.Remove(model, v); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, v)
	}
	return removed, errors.Join(errs...)
}
