package preprocess

// Size estimates for the cache's byte budget. They count what a compiled
// pipeline keeps reachable, with Go's allocation overheads approximated; the
// test TestSizeEstimate holds them within a factor of the heap really used.
const (
	// mapSlotBytes is one map entry with a string key (the 16-byte header and
	// the value), its share of control words and the slack maps carry between
	// doublings.
	mapSlotBytes = 48
	// objBytes is a small object's header and size-class rounding.
	objBytes = 32
)

// strBytes is a string's header and its data rounded up to 8 bytes.
func strBytes(s string) int64 { return 16 + int64(len(s)+7)&^7 }

// dataBytes is a string's data only (when its header is counted elsewhere).
func dataBytes(s string) int64 { return int64(len(s)+7) &^ 7 }

// sizeBytes estimates the bytes p keeps reachable, its text vocabulary excluded
// (vocabularies are shared between pipelines and counted once: see
// wordVocab.bytes).
func (p *Pipeline) sizeBytes() int64 {
	n := int64(512) + strBytes(p.fingerprint) + strBytes(p.description)
	for k, v := range p.metadata {
		n += mapSlotBytes + dataBytes(k) + dataBytes(v)
	}
	if t := p.text; t != nil {
		n += 256 + 8*int64(len(t.prefix)+len(t.suffix)) + 3*(objBytes+strBytes(""))
		for _, to := range []*tensorOut{t.ids, t.mask, t.types, t.strs} {
			if to != nil {
				n += dataBytes(to.name)
			}
		}
	}
	for _, g := range p.groups {
		n += 128 + dataBytes(g.input)
		for _, f := range g.numeric {
			n += 64 + dataBytes(f.name) + 2*mapSlotBytes // p.numeric and numericNames
		}
		for _, f := range g.categorical {
			n += 128 + dataBytes(f.name) + dataBytes(f.def) + 2*mapSlotBytes
			for v := range f.vocab {
				n += mapSlotBytes + dataBytes(v)
			}
		}
	}
	for _, o := range p.outputs {
		n += 96 + dataBytes(o.name)
		for _, l := range o.labels {
			n += strBytes(l)
		}
	}
	for _, in := range p.inputs {
		n += 96 + dataBytes(in.Name) + dataBytes(in.Source)
	}
	return n
}

// vocabBytes estimates a compiled WordPiece vocabulary: a map slot per token and
// the token's bytes (the lines of the file, read once).
func vocabBytes(v *wordVocab) int64 {
	n := int64(256)
	for k := range v.start {
		n += mapSlotBytes + dataBytes(k)
	}
	for k := range v.cont {
		n += mapSlotBytes + dataBytes(k) + int64(len(v.prefix))
	}
	return n
}
