package preprocess

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"io/fs"
	"os"
)

// SpecHash identifies a spec by its content: SHA-256 over the spec file and, in the
// order compilation reads them, the name and bytes of every asset it reads, each
// length-prefixed so that no two different inputs hash alike. Two versions with
// the same SpecHash compile to identical pipelines, which is why it keys the Store's
// cache of compiled pipelines (per-customer models often share one spec and
// vocabulary). The zero SpecHash is no spec.
type SpecHash [32]byte

// String is the first 16 hex digits, enough to tell specs apart in logs.
func (h SpecHash) String() string { return hex.EncodeToString(h[:8]) }

// keyHasher computes a SpecHash. The zero value is not usable: see newKeyHasher.
type keyHasher struct{ h hash.Hash }

const keyDomain = "tfgate-preprocess-key/1"

func newKeyHasher(spec []byte) keyHasher {
	k := keyHasher{h: sha256.New()}
	k.write([]byte(keyDomain))
	k.write(spec)
	return k
}

// write adds b with its length in front.
func (k keyHasher) write(b []byte) {
	var n [binary.MaxVarintLen64]byte
	k.h.Write(n[:binary.PutUvarint(n[:], uint64(len(b)))])
	k.h.Write(b)
}

func (k keyHasher) asset(name string, b []byte) {
	k.write([]byte(name))
	k.write(b)
}

func (k keyHasher) sum() (h SpecHash) {
	k.h.Sum(h[:0])
	return h
}

// contentKey is the SpecHash the spec in versionDir would compile to, computed by
// reading the spec and its assets without compiling them; false when anything is
// off (no spec, bad JSON, an asset missing or over its limit), which only
// compiling can explain. A key equal to the SpecHash of a pipeline compiled before
// means the same bytes went in, so that pipeline is this version's too: the key is
// only trusted when it matches a compiled pipeline's SpecHash, never on its own, so a
// spec whose assets this reads differently from the compiler is merely compiled.
func contentKey(versionDir string) (SpecHash, bool) {
	root, err := os.OpenRoot(versionDir)
	if err != nil {
		return SpecHash{}, false
	}
	defer root.Close()
	fsys := root.FS()
	spec, err := readLimited(fsys, SpecPath, MaxSpecBytes)
	if err != nil {
		return SpecHash{}, false
	}
	s, err := decodeSpec(spec)
	if err != nil {
		return SpecHash{}, false
	}
	k := newKeyHasher(spec)
	var total int64
	for _, name := range assetNames(s) {
		if name == "" || !fs.ValidPath(name) {
			return SpecHash{}, false
		}
		b, err := readLimited(fsys, name, min(MaxAssetBytes, MaxAssetBytesTotal-total))
		if err != nil {
			return SpecHash{}, false
		}
		total += int64(len(b))
		k.asset(name, b)
	}
	return k.sum(), true
}

// assetNames lists the asset files the compilation of a valid spec reads, in the
// order it reads them (compile: text, then each feature group, then outputs).
func assetNames(s *SpecJSON) []string {
	var out []string
	if t := s.Text; t != nil && t.Strings == nil && t.WordPiece != nil {
		out = append(out, t.WordPiece.Vocab)
	}
	for _, g := range s.Features {
		for _, c := range g.Categorical {
			if c.VocabFile != "" {
				out = append(out, c.VocabFile)
			}
		}
	}
	for _, o := range s.Outputs {
		if o.Labels != "" {
			out = append(out, o.Labels)
		}
	}
	return out
}
