package preprocess

import (
	"sync"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/cases"
	"golang.org/x/text/transform"
	"golang.org/x/text/unicode/norm"
)

// textStep is the compiled text section: normalize, split into words, WordPiece,
// then truncate and pad to L with prefix and suffix tokens.
type textStep struct {
	form         norm.Form
	useForm      bool
	caseFold     bool
	stripAccents bool
	splitPunct   bool
	splitSymbols bool
	splitCJK     bool
	allowEmpty   bool

	v *wordVocab

	unk, pad       int64
	prefix, suffix []int64
	maxChars       int
	L              int

	ids, mask, types *tensorOut

	// strs, when set, replaces tokenization: the normalized text is sent as a
	// DT_STRING input of shape strsShape ([-1] or [-1, 1]).
	strs      *tensorOut
	strsShape []int64
}

// wordVocab is a compiled WordPiece vocabulary. It is immutable and shared by
// every pipeline whose vocabulary file and continuation prefix are identical
// (thousands of per-customer models usually share one tokenizer).
type wordVocab struct {
	// start holds pieces that may begin a word, cont the continuation pieces with
	// their prefix removed; the first occurrence of a line wins.
	start, cont       map[string]int32
	maxStart, maxCont int // longest key in bytes, to bound the match loop
	size              int // lines, so ids are in [0, size)
	prefix            string
	key               vocabKey // what it was built from
	bytes             int64    // estimated size (vocabBytes)
}

func newWordVocab(toks []string, prefix string) *wordVocab {
	v := &wordVocab{size: len(toks), prefix: prefix, start: make(map[string]int32, len(toks)), cont: make(map[string]int32)}
	for i, tok := range toks {
		if tok == "" {
			continue // an empty line keeps its id but never matches
		}
		m, key, isCont := v.split(tok)
		if _, dup := m[key]; dup {
			continue
		}
		m[key] = int32(i)
		if isCont {
			v.maxCont = max(v.maxCont, len(key))
		} else {
			v.maxStart = max(v.maxStart, len(key))
		}
	}
	return v
}

// split says which map holds tok, under which key.
func (v *wordVocab) split(tok string) (m map[string]int32, key string, isCont bool) {
	if v.prefix != "" && len(tok) > len(v.prefix) && tok[:len(v.prefix)] == v.prefix {
		return v.cont, tok[len(v.prefix):], true
	}
	return v.start, tok, false
}

// id returns a vocabulary line's id.
func (v *wordVocab) id(tok string) (int32, bool) {
	m, key, _ := v.split(tok)
	id, ok := m[key]
	return id, ok
}

// vocabCache shares compiled vocabularies between the pipelines in a Store's
// cache. It holds the vocabularies of the cached pipelines (refs counts the
// pipelines using each), so a vocabulary lives as long as a cached pipeline uses
// it, a compile of a spec with the same vocabulary file reuses it, and the cache
// counts its bytes once.
type vocabCache struct {
	mu   sync.Mutex
	m    map[vocabKey]*wordVocab
	refs map[*wordVocab]int
}

type vocabKey struct {
	sum    [32]byte
	prefix string
}

// get returns the shared vocabulary for k, building it when there is none. A
// nil cache always builds.
func (c *vocabCache) get(k vocabKey, build func() *wordVocab) *wordVocab {
	if c != nil {
		c.mu.Lock()
		v := c.m[k]
		c.mu.Unlock()
		if v != nil {
			return v
		}
	}
	v := build()
	if v != nil {
		v.key, v.bytes = k, vocabBytes(v)
	}
	return v
}

// ref counts one more cached pipeline using v and shares v under its key if no
// other vocabulary is shared there. It reports whether v was not counted before
// (its bytes join the cache's).
func (c *vocabCache) ref(v *wordVocab) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.refs == nil {
		c.refs, c.m = map[*wordVocab]int{}, map[vocabKey]*wordVocab{}
	}
	c.refs[v]++
	if c.refs[v] > 1 {
		return false
	}
	if c.m[v.key] == nil {
		c.m[v.key] = v
	}
	return true
}

// unref undoes ref; it reports whether that was v's last cached pipeline.
func (c *vocabCache) unref(v *wordVocab) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.refs[v]--; c.refs[v] > 0 {
		return false
	}
	delete(c.refs, v)
	if c.m[v.key] == v {
		delete(c.m, v.key)
	}
	return true
}

func (c *vocabCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// casers pools case folders: a cases.Caser is stateful and must not be shared.
var casers = sync.Pool{New: func() any { c := cases.Fold(); return &c }}

// normalize returns the normalized form of s: control characters dropped,
// whitespace made ' ', then the Unicode form, case folding and accent stripping
// the spec asks for. Pure ASCII text takes a fast path with the same result. The
// result is one of sc's buffers, valid until the next call.
func (t *textStep) normalize(s string, sc *textScratch) []byte {
	dst := sc.norm[:0]
	if isASCII(s) {
		tab := &asciiKeep
		if t.caseFold {
			tab = &asciiFold
		}
		for i := 0; i < len(s); i++ {
			if c := tab[s[i]]; c != 0 {
				dst = append(dst, c)
			}
		}
		sc.norm = dst
		return dst
	}
	for _, r := range s {
		switch {
		case r == '\t' || r == '\n' || r == '\r':
			dst = append(dst, ' ')
		case r == utf8.RuneError || r == 0 || unicode.Is(unicode.Cc, r) || unicode.Is(unicode.Cf, r):
			// dropped, as BERT's clean_text does
		default:
			dst = utf8.AppendRune(dst, r)
		}
	}
	// Each step reads one buffer and writes the other, then they swap.
	if cap(sc.alt) < len(dst) {
		sc.alt = make([]byte, 0, 2*len(dst)) // once per Encode: steps rarely grow text
	}
	cur, alt := dst, sc.alt[:0]
	step := func(f func(out, in []byte) []byte) {
		alt = f(alt[:0], cur)
		cur, alt = alt, cur
	}
	if t.useForm && !t.form.IsNormal(cur) {
		step(func(out, in []byte) []byte { return t.form.Append(out, in...) })
	}
	if t.caseFold {
		cp := casers.Get().(*cases.Caser)
		step(func(out, in []byte) []byte { return foldAppend(cp, out, in) })
		casers.Put(cp)
		if t.useForm && !t.form.IsNormal(cur) { // NFKC_Casefold re-normalizes after folding
			step(func(out, in []byte) []byte { return t.form.Append(out, in...) })
		}
	}
	if t.stripAccents {
		step(func(out, in []byte) []byte {
			sc.nfd = norm.NFD.Append(sc.nfd[:0], in...)
			d := sc.nfd
			for i := 0; i < len(d); {
				r, n := utf8.DecodeRune(d[i:])
				if !unicode.Is(unicode.Mn, r) {
					out = append(out, d[i:i+n]...)
				}
				i += n
			}
			return out
		})
	}
	sc.norm, sc.alt = cur, alt
	return cur
}

// foldAppend appends the full Unicode case folding of src to dst. ASCII bytes
// fold through a table; each run of non-ASCII characters goes through the
// caser. Case folding has no context, so folding runs separately is exact.
func foldAppend(cp *cases.Caser, dst, src []byte) []byte {
	for i := 0; i < len(src); {
		if c := src[i]; c < utf8.RuneSelf {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			dst = append(dst, c)
			i++
			continue
		}
		j := i + 1
		for j < len(src) && src[j] >= utf8.RuneSelf {
			j++
		}
		cp.Reset()
		r, _, err := transform.Append(cp, dst, src[i:j])
		if err != nil {
			r = append(dst, src[i:j]...) // cannot happen on valid UTF-8; keep the text
		}
		dst = r
		i = j
	}
	return dst
}

// asciiKeep and asciiFold map each ASCII byte to its normalized form, 0 to drop
// it: controls are dropped, tab and line breaks become ' ', asciiFold lowercases.
var asciiKeep, asciiFold [256]byte

func init() {
	for c := range 128 {
		b := byte(c)
		switch {
		case b == '\t' || b == '\n' || b == '\r':
			b = ' '
		case b < 0x20 || b == 0x7f:
			b = 0
		}
		asciiKeep[c] = b
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		asciiFold[c] = b
	}
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// isPunct follows BERT: every non-alphanumeric printable ASCII character, and any
// Unicode punctuation (P*).
func isPunct(r rune) bool {
	if (r >= 33 && r <= 47) || (r >= 58 && r <= 64) || (r >= 91 && r <= 96) || (r >= 123 && r <= 126) {
		return true
	}
	return r >= utf8.RuneSelf && unicode.IsPunct(r)
}

// isCJK is BERT's _is_chinese_char: the CJK Unified Ideographs blocks.
func isCJK(r rune) bool {
	return (r >= 0x4E00 && r <= 0x9FFF) || (r >= 0x3400 && r <= 0x4DBF) ||
		(r >= 0x20000 && r <= 0x2A6DF) || (r >= 0x2A700 && r <= 0x2B73F) ||
		(r >= 0x2B740 && r <= 0x2B81F) || (r >= 0x2B820 && r <= 0x2CEAF) ||
		(r >= 0xF900 && r <= 0xFAFF) || (r >= 0x2F800 && r <= 0x2FA1F)
}

func (t *textStep) splits(r rune) bool {
	if t.splitPunct && isPunct(r) {
		return true
	}
	if r < utf8.RuneSelf {
		return false
	}
	return (t.splitCJK && isCJK(r)) || (t.splitSymbols && unicode.IsSymbol(r))
}

// tokenize calls emit for each word of normalized text b: runs of characters
// between whitespace, with each split character (punctuation, CJK, symbols, as
// configured) a word of its own. emit returns false to stop early.
func (t *textStep) tokenize(b []byte, emit func(word []byte) bool) {
	ws := -1 // start of the current word, -1 when none
	for i := 0; i < len(b); {
		r, n := rune(b[i]), 1
		if r >= utf8.RuneSelf {
			r, n = utf8.DecodeRune(b[i:])
		}
		switch {
		case r == ' ' || unicode.IsSpace(r):
			if ws >= 0 && !emit(b[ws:i]) {
				return
			}
			ws = -1
		case t.splits(r):
			if ws >= 0 && !emit(b[ws:i]) {
				return
			}
			ws = -1
			if !emit(b[i : i+n]) {
				return
			}
		default:
			if ws < 0 {
				ws = i
			}
		}
		i += n
	}
	if ws >= 0 {
		emit(b[ws:])
	}
}

// wordPiece appends the ids of word's pieces to dst: greedy longest match first,
// continuation pieces after the first. A word longer than maxChars runes, or with
// any part that matches nothing, becomes one [UNK].
func (t *textStep) wordPiece(dst []int64, word []byte) []int64 {
	if utf8.RuneCount(word) > t.maxChars {
		return append(dst, t.unk)
	}
	mark := len(dst)
	for start := 0; start < len(word); {
		m, maxLen := t.v.start, t.v.maxStart
		if start > 0 {
			m, maxLen = t.v.cont, t.v.maxCont
		}
		end := min(len(word), start+maxLen)
		for end > start && !utf8.RuneStart(safeAt(word, end)) {
			end-- // never cut a rune
		}
		found := false
		for end > start {
			if id, ok := m[string(word[start:end])]; ok {
				dst = append(dst, int64(id))
				found = true
				break
			}
			_, n := utf8.DecodeLastRune(word[start:end])
			end -= n
		}
		if !found {
			return append(dst[:mark], t.unk)
		}
		start = end
	}
	return dst
}

// safeAt is word[i], or a rune-start byte at the end of word.
func safeAt(word []byte, i int) byte {
	if i >= len(word) {
		return 0
	}
	return word[i]
}

// encodeRow normalizes and tokenizes s into one row of ids and mask (length L),
// and returns the scratch buffers for reuse and the number of real tokens.
func (t *textStep) encodeRow(s string, ids, mask []int64, scratch *textScratch) int {
	normalized := t.normalize(s, scratch)
	toks := append(scratch.toks[:0], t.prefix...)
	room := t.L - len(t.suffix)
	t.tokenize(normalized, func(word []byte) bool {
		toks = t.wordPiece(toks, word)
		return len(toks) < room
	})
	if len(toks) > room {
		toks = toks[:room] // truncation keeps the first tokens
	}
	toks = append(toks, t.suffix...)
	n := copy(ids, toks)
	for i := range n {
		mask[i] = 1
	}
	for i := n; i < len(ids); i++ {
		ids[i] = t.pad
		mask[i] = 0
	}
	scratch.toks = toks
	return n
}

// textScratch holds buffers reused across the instances of one Encode call.
type textScratch struct {
	norm, alt, nfd []byte
	toks           []int64
}
