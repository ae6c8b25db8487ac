package placement

import (
	"bufio"
	"bytes"
	"cmp"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"
)

// Wire format of one host's assignment (see doc.go for the key layout).
//
// A host's entries are split into Shards shards by a stable hash of the model
// name, so a change to one model rewrites one shard. A shard value is gzip of
// text lines, sorted by key:
//
//	tfgate-placement-shard 1
//	<model>\t<version>\t<bytes>\t<since unix seconds>\t<flags>
//
// flags is "-" or "d" (draining). The manifest is JSON and names, per shard, the
// generation whose key holds it and the xxhash64 of its uncompressed text, so a
// reader that sees a manifest with shards from a half-finished update detects it
// and keeps its last good assignment.

// Codec limits.
const (
	// MaxValueBytes is Consul's default KV value limit (512 KiB).
	MaxValueBytes = 512 << 10
	// MaxTxnOps is Consul's limit on operations in one transaction.
	MaxTxnOps = 64
	// DefaultShards is the shards per host. 16 shards of at most 512 KiB
	// compressed hold far more than 50,000 entries on one host.
	DefaultShards = 16
	// MaxShards keeps a whole host (shards + manifest + session check) in one txn.
	MaxShards = MaxTxnOps - 2

	shardHeader    = "tfgate-placement-shard 1"
	ManifestFormat = 1
)

// Codec errors.
var (
	// ErrInconsistent: the shards read do not match the manifest (an update in
	// flight, or a writer that died half-way). Keep the last good value.
	ErrInconsistent = errors.New("placement value inconsistent with its manifest")
	// ErrTooLarge: a shard would exceed Consul's value limit; raise the shard count.
	ErrTooLarge = errors.New("placement shard exceeds the KV value limit")
	// ErrBadName: a model name with a tab, newline or slash cannot be stored.
	ErrBadName = errors.New("model name not storable in placement")
)

// ShardRef is one shard as the manifest names it.
type ShardRef struct {
	// Gen is the generation suffix of the shard's key.
	Gen uint64 `json:"gen"`
	// Sum is the hex xxhash64 of the uncompressed shard text.
	Sum     string `json:"sum"`
	Entries int    `json:"entries"`
	Bytes   int64  `json:"bytes"`
}

// Manifest heads one host's assignment.
type Manifest struct {
	Format     int        `json:"format"`
	Pool       string     `json:"pool"`
	Host       string     `json:"host"`
	Generation uint64     `json:"generation"`
	Entries    int        `json:"entries"`
	Bytes      int64      `json:"bytes"`
	Written    time.Time  `json:"written"`
	Leader     string     `json:"leader,omitempty"`
	Shards     []ShardRef `json:"shards"`
}

// ShardValue is a shard to write: its index, generation and compressed value.
type ShardValue struct {
	Index int
	Gen   uint64
	Value []byte
}

// EncodeHost encodes one host's entries. Shards unchanged from prev (same sum)
// keep prev's generation and are not returned; changed ones get generation gen.
// shards <= 0 means DefaultShards. A prev with another shard count is ignored.
func EncodeHost(pool, host string, entries []Entry, shards int, prev *Manifest, gen uint64) (Manifest, []ShardValue, error) {
	if shards <= 0 {
		shards = DefaultShards
	}
	if shards > MaxShards {
		return Manifest{}, nil, fmt.Errorf("%w: %d shards, at most %d", ErrConfig, shards, MaxShards)
	}
	if prev != nil && len(prev.Shards) != shards {
		prev = nil
	}
	bufs := make([]bytes.Buffer, shards)
	m := Manifest{Format: ManifestFormat, Pool: pool, Host: host, Generation: gen, Shards: make([]ShardRef, shards)}
	for i := range bufs {
		bufs[i].WriteString(shardHeader)
		bufs[i].WriteByte('\n')
	}
	for _, e := range entries {
		if strings.ContainsAny(e.Model, "\t\n/") || e.Model == "" {
			return Manifest{}, nil, fmt.Errorf("%w: %q", ErrBadName, e.Model)
		}
		i := ShardOf(e.Model, shards)
		b := &bufs[i]
		b.WriteString(e.Model)
		b.WriteByte('\t')
		b.WriteString(strconv.FormatInt(e.Version, 10))
		b.WriteByte('\t')
		b.WriteString(strconv.FormatInt(e.Bytes, 10))
		b.WriteByte('\t')
		b.WriteString(strconv.FormatInt(e.Since.Unix(), 10))
		if e.Draining {
			b.WriteString("\td\n")
		} else {
			b.WriteString("\t-\n")
		}
		m.Shards[i].Entries++
		m.Shards[i].Bytes += e.Bytes
		m.Entries++
		m.Bytes += e.Bytes
	}
	var out []ShardValue
	var zw *gzip.Writer
	defer func() {
		if zw != nil {
			putGzipWriter(zw)
		}
	}()
	for i := range bufs {
		sum := strconv.FormatUint(xxhash.Sum64(bufs[i].Bytes()), 16)
		m.Shards[i].Sum = sum
		if prev != nil && prev.Shards[i].Sum == sum {
			m.Shards[i].Gen = prev.Shards[i].Gen
			continue
		}
		m.Shards[i].Gen = gen
		var z bytes.Buffer
		if zw == nil {
			zw = getGzipWriter(&z)
		} else {
			zw.Reset(&z)
		}
		_, _ = zw.Write(bufs[i].Bytes())
		_ = zw.Close()
		if z.Len() > MaxValueBytes {
			return Manifest{}, nil, fmt.Errorf("%w: host %s shard %d is %d bytes compressed (%d entries); use more shards", ErrTooLarge, host, i, z.Len(), m.Shards[i].Entries)
		}
		out = append(out, ShardValue{Index: i, Gen: gen, Value: z.Bytes()})
	}
	return m, out, nil
}

// ShardOf is the shard of a model among n.
func ShardOf(model string, n int) int { return int(xxhash.Sum64String(model) % uint64(n)) }

// EncodeManifest is the manifest's KV value.
func EncodeManifest(m Manifest) []byte {
	b, _ := json.Marshal(m)
	return b
}

// DecodeManifest parses a manifest value.
func DecodeManifest(b []byte) (Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return Manifest{}, fmt.Errorf("placement manifest: %w", err)
	}
	if m.Format != ManifestFormat {
		return Manifest{}, fmt.Errorf("placement manifest format %d, this build reads %d", m.Format, ManifestFormat)
	}
	return m, nil
}

// DecodeHost rebuilds a host's entries from its manifest and shard values, keyed
// by (shard index, generation). A missing shard or a sum mismatch is ErrInconsistent.
func DecodeHost(m Manifest, shards func(index int, gen uint64) ([]byte, bool)) ([]Entry, error) {
	// The manifest's count is a hint from outside: never trust it for memory.
	entries := make([]Entry, 0, min(max(m.Entries, 0), 1<<16))
	for i, ref := range m.Shards {
		z, ok := shards(i, ref.Gen)
		if !ok {
			return nil, fmt.Errorf("%w: host %s shard %d generation %d missing", ErrInconsistent, m.Host, i, ref.Gen)
		}
		zr, err := getGzipReader(bytes.NewReader(z))
		if err != nil {
			return nil, fmt.Errorf("%w: host %s shard %d: %v", ErrInconsistent, m.Host, i, err)
		}
		raw, err := io.ReadAll(io.LimitReader(zr, 64<<20))
		putGzipReader(zr)
		if err != nil {
			return nil, fmt.Errorf("%w: host %s shard %d: %v", ErrInconsistent, m.Host, i, err)
		}
		if strconv.FormatUint(xxhash.Sum64(raw), 16) != ref.Sum {
			return nil, fmt.Errorf("%w: host %s shard %d sum differs from the manifest", ErrInconsistent, m.Host, i)
		}
		sc := bufio.NewScanner(bytes.NewReader(raw))
		sc.Buffer(nil, 1<<20)
		first := true
		for sc.Scan() {
			line := sc.Text()
			if first {
				if line != shardHeader {
					return nil, fmt.Errorf("host %s shard %d: header %q, want %q", m.Host, i, line, shardHeader)
				}
				first = false
				continue
			}
			f := strings.Split(line, "\t")
			if len(f) != 5 {
				return nil, fmt.Errorf("host %s shard %d: bad line %q", m.Host, i, line)
			}
			v, err1 := strconv.ParseInt(f[1], 10, 64)
			n, err2 := strconv.ParseInt(f[2], 10, 64)
			s, err3 := strconv.ParseInt(f[3], 10, 64)
			if err := errors.Join(err1, err2, err3); err != nil {
				return nil, fmt.Errorf("host %s shard %d: bad line %q: %w", m.Host, i, line, err)
			}
			entries = append(entries, Entry{Key: Key{Model: f[0], Version: v}, Bytes: n, Since: time.Unix(s, 0).UTC(), Draining: f[4] == "d"})
		}
	}
	sortEntries(entries)
	return entries, nil
}

// sortEntries restores key order (shards interleave models).
func sortEntries(es []Entry) {
	slices.SortFunc(es, func(a, b Entry) int {
		if a.Model != b.Model {
			return strings.Compare(a.Model, b.Model)
		}
		return cmp.Compare(a.Version, b.Version)
	})
}
