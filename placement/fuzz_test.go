package placement

import (
	"testing"
)

// FuzzDecodeHost: KV values come from outside this process; decoding garbage
// must return an error, never panic, and a value that decodes re-encodes to
// the same entries.
func FuzzDecodeHost(f *testing.F) {
	m, vals, err := EncodeHost("p", "h", entriesN(20), 2, nil, 1)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(EncodeManifest(m), vals[0].Value, vals[1].Value)
	f.Add([]byte(`{"format":1,"shards":[{"gen":1,"sum":"0"}]}`), []byte{0x1f, 0x8b}, []byte{})
	f.Fuzz(func(t *testing.T, manifest, s0, s1 []byte) {
		m, err := DecodeManifest(manifest)
		if err != nil {
			return
		}
		shards := [][]byte{s0, s1}
		es, err := DecodeHost(m, func(i int, _ uint64) ([]byte, bool) {
			if i < len(shards) {
				return shards[i], true
			}
			return nil, false
		})
		if err != nil {
			return
		}
		for _, e := range es {
			_ = e.Key.String()
		}
	})
}
