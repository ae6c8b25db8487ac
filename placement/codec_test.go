package placement

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"
)

type shardMap map[[2]uint64][]byte

func (s shardMap) get(i int, gen uint64) ([]byte, bool) {
	b, ok := s[[2]uint64{uint64(i), gen}]
	return b, ok
}

func (s shardMap) put(vs []ShardValue) {
	for _, v := range vs {
		s[[2]uint64{uint64(v.Index), v.Gen}] = v.Value
	}
}

func entriesN(n int) []Entry {
	es := make([]Entry, n)
	for i := range es {
		es[i] = Entry{Key: Key{Model: fmt.Sprintf("customer-%06d", i), Version: int64(1 + i%3)}, Bytes: int64(i+1) * mb,
			Since: t0.Add(time.Duration(i) * time.Second), Draining: i%7 == 0}
	}
	sortEntries(es)
	return es
}

func TestCodecRoundTripAndIncremental(t *testing.T) {
	es := entriesN(3000)
	m1, vals, err := EncodeHost("default", "h1", es, 16, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(vals) != 16 {
		t.Fatalf("first write has %d shards, want 16", len(vals))
	}
	store := shardMap{}
	store.put(vals)
	m1, err = DecodeManifest(EncodeManifest(m1))
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeHost(m1, store.get)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, es) {
		t.Fatalf("round trip differs: %d entries vs %d", len(got), len(es))
	}

	// One changed model rewrites one shard.
	es2 := append([]Entry(nil), es...)
	es2[42].Bytes++
	m2, vals2, err := EncodeHost("default", "h1", es2, 16, &m1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(vals2) != 1 || vals2[0].Index != ShardOf(es2[42].Model, 16) {
		t.Fatalf("one change wrote %d shards, want 1 (shard of %s)", len(vals2), es2[42].Model)
	}
	// A reader seeing the new manifest before the shard is written: inconsistent.
	if _, err := DecodeHost(m2, store.get); !errors.Is(err, ErrInconsistent) {
		t.Fatalf("decode with a missing shard: %v, want ErrInconsistent", err)
	}
	store.put(vals2)
	got, err = DecodeHost(m2, store.get)
	if err != nil || !reflect.DeepEqual(got, es2) {
		t.Fatalf("after the update: %v, equal %v", err, reflect.DeepEqual(got, es2))
	}
	// A shard overwritten under a manifest that names its generation: the sum catches it.
	bad := shardMap{}
	for k, v := range store {
		bad[k] = v
	}
	i := vals2[0].Index
	bad[[2]uint64{uint64(i), 2}] = store[[2]uint64{uint64(i), m1.Shards[i].Gen}]
	if _, err := DecodeHost(m2, bad.get); !errors.Is(err, ErrInconsistent) {
		t.Fatalf("decode with a wrong shard: %v, want ErrInconsistent", err)
	}
}

// TestCodecFitsConsulLimits: 50,000 entries on one host (the worst case of
// 50,000 models over 20 hosts) fit in DefaultShards values under 512 KiB.
func TestCodecFitsConsulLimits(t *testing.T) {
	es := entriesN(50000)
	m, vals, err := EncodeHost("default", "h1", es, DefaultShards, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	var total, biggest int
	for _, v := range vals {
		total += len(v.Value)
		biggest = max(biggest, len(v.Value))
	}
	t.Logf("50,000 entries: %d shards, %d bytes compressed, largest shard %d bytes, manifest %d bytes", len(vals), total, biggest, len(EncodeManifest(m)))
	if biggest > MaxValueBytes/4 {
		t.Errorf("largest shard %d bytes: less than 4x headroom under %d", biggest, MaxValueBytes)
	}
	if len(vals)+2 > MaxTxnOps {
		t.Errorf("%d shards do not fit one txn with manifest and session check", len(vals))
	}
}

func TestCodecRejectsBadNames(t *testing.T) {
	for _, name := range []string{"", "a\tb", "a\nb", "a/b"} {
		if _, _, err := EncodeHost("p", "h", []Entry{{Key: Key{Model: name, Version: 1}}}, 4, nil, 1); !errors.Is(err, ErrBadName) {
			t.Errorf("model %q: %v, want ErrBadName", name, err)
		}
	}
}
