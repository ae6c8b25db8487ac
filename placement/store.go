package placement

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
)

// Store errors.
var (
	// ErrConflict: a check-and-set lost (someone else wrote since we read, or the
	// session no longer holds the leader lock). Re-read and decide again — or, when
	// leadership is lost, stop writing.
	ErrConflict = errors.New("placement write conflict")
	// ErrNotFound: no value under the key.
	ErrNotFound = errors.New("placement value not found")
)

// StoreConfig says where placement lives in Consul and how watches behave.
type StoreConfig struct {
	// Prefix is the KV root. Default "tfgate".
	Prefix string
	// Shards per host assignment. Default DefaultShards (16).
	Shards int
	// WaitTime is the longest a blocking query waits. Default 30s.
	WaitTime time.Duration
	// BackoffMin and BackoffMax bound the retry delay after a Consul error. Defaults 200ms, 10s.
	BackoffMin, BackoffMax time.Duration
	// MaxTxnBytes bounds the value bytes in one transaction (Consul's
	// txn_max_req_len is 512 KiB, and values travel base64 in JSON). Default 320 KiB.
	MaxTxnBytes int
	// Logger; nil discards.
	Logger *slog.Logger
}

func (c StoreConfig) withDefaults() StoreConfig {
	if c.Prefix == "" {
		c.Prefix = "tfgate"
	}
	c.Prefix = strings.TrimSuffix(c.Prefix, "/")
	if c.Shards <= 0 {
		c.Shards = DefaultShards
	}
	if c.WaitTime <= 0 {
		c.WaitTime = 30 * time.Second
	}
	if c.BackoffMin <= 0 {
		c.BackoffMin = 200 * time.Millisecond
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = 10 * time.Second
	}
	if c.MaxTxnBytes <= 0 {
		c.MaxTxnBytes = 320 << 10
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Store reads and writes placement state in Consul KV. It is safe for concurrent
// use; the methods that watch own their loop until ctx is done.
type Store struct {
	cfg StoreConfig
	c   *api.Client
}

// NewStore returns a Store on client.
func NewStore(client *api.Client, cfg StoreConfig) *Store {
	return &Store{cfg: cfg.withDefaults(), c: client}
}

// Key paths.

// LockKey is the controller's leader lock.
func (s *Store) LockKey() string { return s.cfg.Prefix + "/placement-leader" }

// HostPrefix is where one host's assignment lives (manifest and shards).
func (s *Store) HostPrefix(pool, host string) string {
	return s.cfg.Prefix + "/placement/" + pool + "/" + host + "/"
}

func (s *Store) placementPrefix() string { return s.cfg.Prefix + "/placement/" }

// StatusKey is where a host reports what it has loaded.
func (s *Store) StatusKey(host string) string { return s.cfg.Prefix + "/status/" + host }

// DemandKey is where a gateway reports what it saw.
func (s *Store) DemandKey(gateway string) string { return s.cfg.Prefix + "/demand/" + gateway }

// CatalogPrefix is where the model catalog lives (manifest and shards).
func (s *Store) CatalogPrefix() string { return s.cfg.Prefix + "/catalog/" }

func shardKey(prefix string, i int, gen uint64) string {
	return prefix + "shard/" + strconv.Itoa(i) + "." + strconv.FormatUint(gen, 10)
}

// Written is what a writer knows of one sharded value it last read or wrote:
// the manifest and the ModifyIndex to check-and-set against (0: absent).
type Written struct {
	Manifest Manifest
	Index    uint64
	Present  bool
}

// decodeSharded reads a manifest and its shards out of one List result.
func decodeSharded(prefix string, pairs api.KVPairs) (Manifest, uint64, []Entry, error) {
	var man *api.KVPair
	shards := map[string][]byte{}
	for _, p := range pairs {
		rest := strings.TrimPrefix(p.Key, prefix)
		switch {
		case rest == "manifest":
			man = p
		case strings.HasPrefix(rest, "shard/"):
			shards[rest] = p.Value
		}
	}
	if man == nil {
		return Manifest{}, 0, nil, ErrNotFound
	}
	m, err := DecodeManifest(man.Value)
	if err != nil {
		return Manifest{}, man.ModifyIndex, nil, err
	}
	es, err := DecodeHost(m, func(i int, gen uint64) ([]byte, bool) {
		b, ok := shards["shard/"+strconv.Itoa(i)+"."+strconv.FormatUint(gen, 10)]
		return b, ok
	})
	return m, man.ModifyIndex, es, err
}

// writeSharded writes entries under prefix against prev: changed shards under
// generation gen, then the manifest with check-and-set on prev.Index, each
// transaction guarded by the leader session when session is set. When everything
// fits one transaction it is one transaction. Stale shard generations are deleted
// after the manifest commits. It returns what was written and the value bytes sent.
func (s *Store) writeSharded(ctx context.Context, prefix, pool, host, session string, entries []Entry, prev Written, gen uint64) (Written, int, error) {
	var pm *Manifest
	if prev.Present {
		pm = &prev.Manifest
	}
	m, vals, err := EncodeHost(pool, host, entries, s.cfg.Shards, pm, gen)
	if err != nil {
		return prev, 0, err
	}
	if pm != nil && len(vals) == 0 && slices.Equal(pm.Shards, m.Shards) {
		return prev, 0, nil // nothing changed
	}
	m.Written = time.Now().UTC().Truncate(time.Second)
	m.Leader = session
	mv := EncodeManifest(m)
	guard := func() *api.TxnOp {
		return &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVCheckSession, Key: s.LockKey(), Session: session}}
	}
	var batches []api.TxnOps
	var cur api.TxnOps
	curBytes := 0
	start := func() {
		cur, curBytes = nil, 0
		if session != "" {
			cur = append(cur, guard())
		}
	}
	start()
	sent := len(mv)
	for _, v := range vals {
		if len(cur)+2 > MaxTxnOps || (curBytes+len(v.Value) > s.cfg.MaxTxnBytes && curBytes > 0) {
			batches = append(batches, cur)
			start()
		}
		// CAS index 0: the key must not exist (a new generation is never reused).
		cur = append(cur, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVCAS, Key: shardKey(prefix, v.Index, v.Gen), Value: v.Value, Index: 0}})
		curBytes += len(v.Value)
		sent += len(v.Value)
	}
	if len(cur)+1 > MaxTxnOps || curBytes+len(mv) > s.cfg.MaxTxnBytes {
		batches = append(batches, cur)
		start()
	}
	cur = append(cur, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVCAS, Key: prefix + "manifest", Value: mv, Index: prev.Index}})
	batches = append(batches, cur)

	var idx uint64
	for _, b := range batches {
		resp, err := s.txn(ctx, b)
		if err != nil {
			return prev, sent, err
		}
		for _, r := range resp.Results {
			if r.KV != nil && r.KV.Key == prefix+"manifest" {
				idx = r.KV.ModifyIndex
			}
		}
	}
	out := Written{Manifest: m, Index: idx, Present: true}
	if pm != nil {
		s.deleteStale(ctx, prefix, session, *pm, m)
	}
	return out, sent, nil
}

// deleteStale removes shard generations the new manifest no longer names. It is
// best effort: a leftover shard is ignored by readers and removed next time.
func (s *Store) deleteStale(ctx context.Context, prefix, session string, old, cur Manifest) {
	var ops api.TxnOps
	if session != "" {
		ops = append(ops, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVCheckSession, Key: s.LockKey(), Session: session}})
	}
	for i, ref := range old.Shards {
		if i < len(cur.Shards) && cur.Shards[i].Gen == ref.Gen {
			continue
		}
		ops = append(ops, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVDelete, Key: shardKey(prefix, i, ref.Gen)}})
	}
	if len(ops) <= 1 && session != "" || len(ops) == 0 {
		return
	}
	if _, err := s.txn(ctx, ops); err != nil {
		s.cfg.Logger.Debug("placement: stale shards not deleted", "prefix", prefix, "err", err)
	}
}

func (s *Store) txn(ctx context.Context, ops api.TxnOps) (*api.TxnResponse, error) {
	ok, resp, _, err := s.c.Txn().Txn(ops, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("placement: consul txn: %w", err)
	}
	if !ok {
		var what []string
		if resp != nil {
			for _, e := range resp.Errors {
				what = append(what, e.What)
			}
		}
		return nil, fmt.Errorf("%w: %s", ErrConflict, strings.Join(what, "; "))
	}
	return resp, nil
}

// Stored is the whole placement as read from KV at one index: every host's
// assignment and what the writer needs to check-and-set against it.
type Stored struct {
	Assignment Assignment
	Written    map[string]Written // by host ID
	// Broken lists hosts whose value did not decode (an update in flight or a
	// writer that died half-way); their assignment is absent from Assignment.
	Broken map[string]error
	Index  uint64
}

// ReadState reads every host's assignment in one consistent read.
func (s *Store) ReadState(ctx context.Context) (*Stored, error) {
	pairs, meta, err := s.c.KV().List(s.placementPrefix(), (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("placement: read %s: %w", s.placementPrefix(), err)
	}
	return s.parseState(pairs, meta.LastIndex), nil
}

func (s *Store) parseState(pairs api.KVPairs, index uint64) *Stored {
	return s.parseStateCached(pairs, index, nil)
}

// decodedHost is a host's assignment as decoded at its manifest's ModifyIndex.
type decodedHost struct {
	index   uint64
	m       Manifest
	entries []Entry
}

// parseStateCached is parseState reusing, from cache (prefix -> decoded), the
// entries of hosts whose manifest did not change (nil: no cache). The manifest
// is written last, with check-and-set, so an unchanged ModifyIndex is unchanged
// entries. Entries are then shared between results: for read-only consumers.
// The cache is left holding the hosts of this state.
func (s *Store) parseStateCached(pairs api.KVPairs, index uint64, cache map[string]decodedHost) *Stored {
	st := &Stored{Assignment: Assignment{Hosts: map[string]HostAssignment{}}, Written: map[string]Written{}, Broken: map[string]error{}, Index: index}
	base := s.placementPrefix()
	groups := map[[2]string]api.KVPairs{}
	for _, p := range pairs {
		parts := strings.SplitN(strings.TrimPrefix(p.Key, base), "/", 3)
		if len(parts) < 3 {
			continue
		}
		g := [2]string{parts[0], parts[1]}
		groups[g] = append(groups[g], p)
	}
	for g, ps := range groups {
		pool, host := g[0], g[1]
		prefix := s.HostPrefix(pool, host)
		var m Manifest
		var idx uint64
		var es []Entry
		var err error
		if d, ok := cache[prefix]; ok && d.index != 0 && d.index == manifestIndex(prefix, ps) {
			m, idx, es = d.m, d.index, d.entries
		} else {
			m, idx, es, err = decodeSharded(prefix, ps)
			if cache != nil && err == nil {
				cache[prefix] = decodedHost{index: idx, m: m, entries: es}
			}
		}
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if m.Pool == "" {
			m.Pool = pool // a manifest that did not decode: where it lives
		}
		st.Written[host] = Written{Manifest: m, Index: idx, Present: idx != 0}
		if err != nil {
			st.Broken[host] = err
			continue
		}
		st.Assignment.Hosts[host] = HostAssignment{Pool: pool, Entries: es}
	}
	for prefix := range cache {
		parts := strings.SplitN(strings.TrimPrefix(prefix, base), "/", 3)
		if len(parts) < 2 || st.Assignment.Hosts[parts[1]].Pool != parts[0] {
			delete(cache, prefix)
		}
	}
	return st
}

// manifestIndex is the ModifyIndex of the manifest under prefix in ps, 0 if none.
func manifestIndex(prefix string, ps api.KVPairs) uint64 {
	for _, p := range ps {
		if p.Key == prefix+"manifest" {
			return p.ModifyIndex
		}
	}
	return 0
}

// WriteResult says what a WriteAssignment did.
type WriteResult struct {
	HostsWritten int
	Bytes        int
}

// WriteAssignment writes every host of a whose value changed relative to st, each
// host check-and-set on the manifest index in st and, with a session, guarded by
// the leader lock. It updates st as it goes, so a caller can keep writing against
// it. On ErrConflict the caller must re-read (ReadState) before writing again.
// Hosts absent from a keep their last value (nothing is unloaded for lack of an
// answer); pool changes write under the new pool.
func (s *Store) WriteAssignment(ctx context.Context, session string, a Assignment, st *Stored) (WriteResult, error) {
	var res WriteResult
	ids := make([]string, 0, len(a.Hosts))
	for id := range a.Hosts {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	gen := st.Index + 1
	for _, id := range ids {
		ha := a.Hosts[id]
		prev := st.Written[id]
		if prev.Present && prev.Manifest.Pool != ha.Pool {
			prev = Written{}
		}
		if prev.Present && prev.Manifest.Generation >= gen {
			gen = prev.Manifest.Generation + 1
		}
		w, n, err := s.writeSharded(ctx, s.HostPrefix(ha.Pool, id), ha.Pool, id, session, ha.Entries, prev, gen)
		res.Bytes += n
		if err != nil {
			return res, fmt.Errorf("placement: write host %s: %w", id, err)
		}
		if w.Index != prev.Index {
			res.HostsWritten++
			st.Index = max(st.Index, w.Index)
			if st.Written == nil {
				st.Written = map[string]Written{}
			}
			st.Written[id] = w
			if st.Assignment.Hosts == nil {
				st.Assignment.Hosts = map[string]HostAssignment{}
			}
			st.Assignment.Hosts[id] = ha
			delete(st.Broken, id)
		}
	}
	return res, nil
}

// ClearHost deletes one host's assignment (manifest and every shard) in one
// transaction, guarded by the leader session when session is set and
// check-and-set on the manifest index in st, and drops the host from st. The
// controller clears a host that left once its versions are placed elsewhere, so
// that readers stop naming it and a host that comes back starts from a fresh
// assignment, not its stale one. A watching sidecar that is still alive keeps
// what it has (no value is not an empty one: nothing is unloaded). ErrConflict:
// someone wrote since st was read.
func (s *Store) ClearHost(ctx context.Context, session, host string, st *Stored) error {
	w, ok := st.Written[host]
	if !ok || !w.Present {
		return nil
	}
	pool := w.Manifest.Pool
	if ha, ok := st.Assignment.Hosts[host]; ok {
		pool = ha.Pool
	}
	prefix := s.HostPrefix(pool, host)
	var ops api.TxnOps
	if session != "" {
		ops = append(ops, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVCheckSession, Key: s.LockKey(), Session: session}})
	}
	ops = append(ops,
		&api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVCheckIndex, Key: prefix + "manifest", Index: w.Index}},
		&api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVDeleteTree, Key: prefix}})
	resp, err := s.txn(ctx, ops)
	if err != nil {
		return fmt.Errorf("placement: clear host %s: %w", host, err)
	}
	for _, r := range resp.Results {
		if r.KV != nil {
			st.Index = max(st.Index, r.KV.ModifyIndex)
		}
	}
	delete(st.Written, host)
	delete(st.Assignment.Hosts, host)
	delete(st.Broken, host)
	return nil
}

// HostView is one host's assignment as a watcher delivers it.
type HostView struct {
	Pool, Host string
	Assignment HostAssignment
	Manifest   Manifest
	Index      uint64
}

// WatchHost delivers the host's assignment on updates each time it changes, until
// ctx is done (then it returns nil). It delivers only whole, consistent
// assignments: while an update is in flight, while Consul is unreachable, or when
// the host has no assignment yet, nothing is sent and the receiver keeps what it
// has (architecture invariant 8).
func (s *Store) WatchHost(ctx context.Context, pool, host string, updates chan<- HostView) error {
	prefix := s.HostPrefix(pool, host)
	var last *Manifest
	return s.watch(ctx, prefix, func(pairs api.KVPairs, index uint64) bool {
		m, _, es, err := decodeSharded(prefix, pairs)
		if err != nil {
			if !errors.Is(err, ErrNotFound) {
				s.cfg.Logger.Info("placement: host assignment not usable yet, keeping the last one", "host", host, "err", err)
			}
			return true
		}
		if last != nil && last.Generation == m.Generation && slices.Equal(last.Shards, m.Shards) {
			return true // only stale shards were cleaned up
		}
		last = &m
		select {
		case updates <- HostView{Pool: pool, Host: host, Assignment: HostAssignment{Pool: pool, Entries: es}, Manifest: m, Index: index}:
			return true
		case <-ctx.Done():
			return false
		}
	})
}

// watch runs blocking queries on a prefix, calling fn with each new result: it
// skips answers whose index did not move, resets the index when it goes
// backwards (a Consul restore or a new cluster), and backs off on errors,
// keeping the last good value (fn is simply not called), then reads afresh
// (index 0) once Consul answers again. fn returning false ends it; fn must
// tolerate being called again with unchanged data.
func (s *Store) watch(ctx context.Context, prefix string, fn func(api.KVPairs, uint64) bool) error {
	var index uint64
	delay := s.cfg.BackoffMin
	for {
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: s.cfg.WaitTime}).WithContext(ctx)
		pairs, meta, err := s.c.KV().List(prefix, q)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			s.cfg.Logger.Warn("placement: consul watch failed; keeping the last value", "prefix", prefix, "err", err, "retry_in", delay)
			if !sleepCtx(ctx, delay) {
				return nil
			}
			delay = min(delay*2, s.cfg.BackoffMax)
			// After an outage read afresh: a Consul that came back from a wiped or
			// restored state can be at the very index we waited on, with other data.
			index = 0
			continue
		}
		delay = s.cfg.BackoffMin
		s.cfg.Logger.Debug("placement: watch answer", "prefix", prefix, "index", meta.LastIndex, "was", index, "keys", len(pairs))
		switch {
		case meta.LastIndex < index:
			index = 0 // went backwards: start over
			continue
		case meta.LastIndex == index:
			continue
		}
		index = meta.LastIndex
		if !fn(pairs, index) {
			return nil
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// HostStatus is what a host's sidecar reports: the truth the policy uses for
// sizes and failures (routing uses GetModelStatus, never this).
type HostStatus struct {
	Host    string    `json:"host"`
	Pool    string    `json:"pool,omitempty"`
	Updated time.Time `json:"updated"`
	// Resident are the versions the host reports AVAILABLE, with measured bytes.
	Resident []StatusVersion `json:"resident"`
	// Failures are loads that failed, with when to try again.
	Failures  []StatusFailure `json:"failures,omitempty"`
	DiskBytes int64           `json:"disk_bytes,omitempty"`
	// Cached are versions kept on disk but not loaded: the sidecar's cache of
	// recently unassigned versions (Bytes: on disk). Placed here again, one loads
	// without an S3 download. Most recently unassigned first, at most
	// MaxStatusCached; CachedOmitted counts the rest.
	Cached        []StatusVersion `json:"cached,omitempty"`
	CachedOmitted int             `json:"cached_omitted,omitempty"`
}

// MaxStatusCached bounds HostStatus.Cached, so a cache of many small versions
// keeps the status value well under Consul's value limit.
const MaxStatusCached = 4096

// StatusVersion is one loaded version.
type StatusVersion struct {
	Model       string  `json:"m"`
	Version     int64   `json:"v"`
	Bytes       int64   `json:"b,omitempty"`
	LoadSeconds float64 `json:"load_s,omitempty"`
}

// StatusFailure is one failed load.
type StatusFailure struct {
	Model   string    `json:"m"`
	Version int64     `json:"v"`
	Reason  string    `json:"reason"`
	At      time.Time `json:"at"`
	Until   time.Time `json:"until"`
}

// Demand report of one gateway.
type DemandReport struct {
	Gateway  string          `json:"gateway"`
	Updated  time.Time       `json:"updated"`
	Versions []DemandVersion `json:"versions"`
}

// DemandVersion is one version's demand as one gateway saw it.
type DemandVersion struct {
	Model    string    `json:"m"`
	Version  int64     `json:"v"`
	Rate     float64   `json:"r"`
	LastUsed time.Time `json:"t"`
}

// putGzipJSON writes v as gzip JSON under key (plain put: each key has one writer).
func (s *Store) putGzipJSON(ctx context.Context, key string, v any) error {
	b, err := gzipJSON(v)
	if err != nil {
		return err
	}
	if b.Len() > MaxValueBytes {
		return fmt.Errorf("%w: %s is %d bytes compressed", ErrTooLarge, key, b.Len())
	}
	if _, err := s.c.KV().Put(&api.KVPair{Key: key, Value: b.Bytes()}, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("placement: put %s: %w", key, err)
	}
	return nil
}

// gzipJSON is v as gzip JSON (a pooled writer).
func gzipJSON(v any) (*bytes.Buffer, error) {
	var b bytes.Buffer
	zw := getGzipWriter(&b)
	defer putGzipWriter(zw)
	if err := json.NewEncoder(zw).Encode(v); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return &b, nil
}

func gunzipJSON(b []byte, v any) error {
	zr, err := getGzipReader(bytes.NewReader(b))
	if err != nil {
		return err
	}
	defer putGzipReader(zr)
	return json.NewDecoder(io.LimitReader(zr, 64<<20)).Decode(v)
}

// PutStatus writes a host's status (the sidecar calls it).
func (s *Store) PutStatus(ctx context.Context, st HostStatus) error {
	return s.putGzipJSON(ctx, s.StatusKey(st.Host), st)
}

// PutDemand writes a gateway's demand report (the gateway calls it, at a bounded rate).
func (s *Store) PutDemand(ctx context.Context, r DemandReport) error {
	return s.putGzipJSON(ctx, s.DemandKey(r.Gateway), r)
}

// Reports is the status and demand read at one index.
type Reports struct {
	Status map[string]HostStatus
	Demand []DemandReport
	Index  uint64
}

// ReadReports reads every host status and demand report.
func (s *Store) ReadReports(ctx context.Context) (*Reports, error) {
	r := &Reports{Status: map[string]HostStatus{}}
	for _, prefix := range []string{s.cfg.Prefix + "/status/", s.cfg.Prefix + "/demand/"} {
		pairs, meta, err := s.c.KV().List(prefix, (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("placement: read %s: %w", prefix, err)
		}
		r.Index = max(r.Index, meta.LastIndex)
		for _, p := range pairs {
			if strings.HasSuffix(prefix, "/status/") {
				var st HostStatus
				if err := gunzipJSON(p.Value, &st); err != nil {
					s.cfg.Logger.Warn("placement: bad host status ignored", "key", p.Key, "err", err)
					continue
				}
				r.Status[st.Host] = st
				continue
			}
			var d DemandReport
			if err := gunzipJSON(p.Value, &d); err != nil {
				s.cfg.Logger.Warn("placement: bad demand report ignored", "key", p.Key, "err", err)
				continue
			}
			r.Demand = append(r.Demand, d)
		}
	}
	slices.SortFunc(r.Demand, func(a, b DemandReport) int { return cmp.Compare(a.Gateway, b.Gateway) })
	return r, nil
}

// ReadStatuses reads every host's status (without the demand reports).
func (s *Store) ReadStatuses(ctx context.Context) (map[string]HostStatus, error) {
	prefix := s.cfg.Prefix + "/status/"
	pairs, _, err := s.c.KV().List(prefix, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("placement: read %s: %w", prefix, err)
	}
	out := make(map[string]HostStatus, len(pairs))
	for _, p := range pairs {
		var st HostStatus
		if err := gunzipJSON(p.Value, &st); err != nil {
			s.cfg.Logger.Warn("placement: bad host status ignored", "key", p.Key, "err", err)
			continue
		}
		out[st.Host] = st
	}
	return out, nil
}

// MergeDemand sums rates and takes the latest use over reports updated after
// notBefore (older reports are from gateways that stopped reporting).
func MergeDemand(reports []DemandReport, notBefore time.Time) map[Key]Demand {
	out := map[Key]Demand{}
	for _, r := range reports {
		if r.Updated.Before(notBefore) {
			continue
		}
		for _, v := range r.Versions {
			k := Key{Model: v.Model, Version: v.Version}
			d := out[k]
			d.Rate += v.Rate
			if v.LastUsed.After(d.LastUsed) {
				d.LastUsed = v.LastUsed
			}
			out[k] = d
		}
	}
	return out
}

// Inputs turns fresh host statuses (updated after notBefore) into the policy's
// Resident and Failures inputs.
func (r *Reports) Inputs(notBefore time.Time) ([]Resident, []Failure) {
	var res []Resident
	var fails []Failure
	hosts := make([]string, 0, len(r.Status))
	for h := range r.Status {
		hosts = append(hosts, h)
	}
	slices.Sort(hosts)
	for _, h := range hosts {
		st := r.Status[h]
		if st.Updated.Before(notBefore) {
			continue
		}
		for _, v := range st.Resident {
			res = append(res, Resident{Host: h, Key: Key{Model: v.Model, Version: v.Version}, Bytes: v.Bytes})
		}
		for _, f := range st.Failures {
			fails = append(fails, Failure{Host: h, Key: Key{Model: f.Model, Version: f.Version}, Until: f.Until, Reason: f.Reason})
		}
	}
	return res, fails
}

// Catalog in KV: the same sharded format as a host assignment, entries' Bytes
// being object bytes. Sidecars that list the bucket write it; the controller reads it.

// ReadCatalog reads the catalog and what a writer needs to check-and-set against it.
func (s *Store) ReadCatalog(ctx context.Context) ([]Version, Written, error) {
	pairs, _, err := s.c.KV().List(s.CatalogPrefix(), (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, Written{}, fmt.Errorf("placement: read catalog: %w", err)
	}
	m, idx, es, err := decodeSharded(s.CatalogPrefix(), pairs)
	if errors.Is(err, ErrNotFound) {
		return nil, Written{}, nil
	}
	w := Written{Manifest: m, Index: idx, Present: idx != 0}
	if err != nil {
		return nil, w, err
	}
	vs := make([]Version, len(es))
	for i, e := range es {
		vs[i] = Version{Key: e.Key, ObjectBytes: e.Bytes}
	}
	return vs, w, nil
}

// CatalogCache is the last catalog ReadCatalogCached decoded; the zero value is
// empty. Safe for concurrent use.
type CatalogCache struct {
	mu    sync.Mutex
	index uint64 // the manifest's ModifyIndex
	vs    []Version
}

// ReadCatalogCached is ReadCatalog for a reader that only reads the result (the
// controller, once per decision): it reads the manifest alone, and the shards
// only when the manifest changed since c was filled. The manifest is written last,
// with check-and-set, so an unchanged ModifyIndex is an unchanged catalog. At
// 50,000 versions a full read decoded ~450 KB of shards into 8 MB of garbage per
// decision. The slice returned is shared: callers must not modify it.
func (s *Store) ReadCatalogCached(ctx context.Context, c *CatalogCache) ([]Version, error) {
	p, _, err := s.c.KV().Get(s.CatalogPrefix()+"manifest", (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("placement: read catalog manifest: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if p != nil && c.index != 0 && p.ModifyIndex == c.index {
		return c.vs, nil
	}
	vs, w, err := s.ReadCatalog(ctx)
	if err != nil {
		return nil, err
	}
	c.index, c.vs = w.Index, vs
	return vs, nil
}

// WriteCatalog replaces the catalog, check-and-set against prev (from
// ReadCatalog). ErrConflict means another writer won: re-read and retry.
func (s *Store) WriteCatalog(ctx context.Context, vs []Version, prev Written) (Written, error) {
	es := make([]Entry, len(vs))
	for i, v := range vs {
		es[i] = Entry{Key: v.Key, Bytes: v.ObjectBytes}
	}
	sortEntries(es)
	gen := prev.Manifest.Generation + 1
	w, _, err := s.writeSharded(ctx, s.CatalogPrefix(), "", "catalog", "", es, prev, gen)
	return w, err
}

// Report is what the leader says about its last decision, for ListPlacement on
// any gateway: the counts, every problem, and the versions that are not fully
// placed and are pinned, required or can never be placed. (Unrequired versions
// waiting for room are only counted: at 50,000 models they can be most of the
// catalog.)
type Report struct {
	Leader    string         `json:"leader"`
	Generated time.Time      `json:"generated"`
	Stats     Stats          `json:"stats"`
	Problems  []Problem      `json:"problems,omitempty"`
	Versions  []VersionState `json:"versions,omitempty"`
	// Truncated counts problems and versions left out to respect the value limit.
	Truncated int `json:"truncated,omitempty"`
}

// MaxReportItems bounds the problems plus versions in a Report.
const MaxReportItems = 2000

// NewReport summarizes a decision.
func NewReport(d *Decision, leader string, now time.Time) Report {
	r := Report{Leader: leader, Generated: now.UTC(), Stats: d.Stats}
	for _, p := range d.Problems {
		if len(r.Problems) == MaxReportItems {
			r.Truncated++
			continue
		}
		r.Problems = append(r.Problems, p)
	}
	for _, v := range d.Versions {
		if v.State == Placed || (v.State != Unplaceable && !v.Pinned && v.Required == "") {
			continue
		}
		if len(r.Problems)+len(r.Versions) >= MaxReportItems {
			r.Truncated++
			continue
		}
		r.Versions = append(r.Versions, v)
	}
	return r
}

// ReportKey is where the leader writes its Report.
func (s *Store) ReportKey() string { return s.cfg.Prefix + "/placement-report" }

// WriteReport writes the leader's report, guarded by its session when set.
func (s *Store) WriteReport(ctx context.Context, session string, r Report) error {
	b, err := gzipJSON(r)
	if err != nil {
		return err
	}
	if b.Len() > MaxValueBytes {
		return fmt.Errorf("%w: report is %d bytes compressed", ErrTooLarge, b.Len())
	}
	var ops api.TxnOps
	if session != "" {
		ops = append(ops, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVCheckSession, Key: s.LockKey(), Session: session}})
	}
	ops = append(ops, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVSet, Key: s.ReportKey(), Value: b.Bytes()}})
	_, err = s.txn(ctx, ops)
	return err
}

// ReadReport reads the leader's last report (ErrNotFound before the first).
func (s *Store) ReadReport(ctx context.Context) (Report, error) {
	p, _, err := s.c.KV().Get(s.ReportKey(), (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return Report{}, fmt.Errorf("placement: read report: %w", err)
	}
	if p == nil {
		return Report{}, ErrNotFound
	}
	var r Report
	if err := gunzipJSON(p.Value, &r); err != nil {
		return Report{}, fmt.Errorf("placement: report: %w", err)
	}
	return r, nil
}

// WatchState delivers the whole placement (every host) on updates each time it
// changes, until ctx is done (then it returns nil): what a gateway watches to
// know where each version is meant to be (routing still follows what hosts
// report AVAILABLE). Hosts whose value is torn are in Broken and absent from the
// Assignment; the receiver keeps its last good view of them.
func (s *Store) WatchState(ctx context.Context, updates chan<- *Stored) error {
	// Each change rewrites a few hosts; the others' entries are reused (every
	// host's were decoded on every change: 1.7 GB of garbage in 200 s of the
	// fleet bench).
	cache := map[string]decodedHost{}
	return s.watch(ctx, s.placementPrefix(), func(pairs api.KVPairs, index uint64) bool {
		select {
		case updates <- s.parseStateCached(pairs, index, cache):
			return true
		case <-ctx.Done():
			return false
		}
	})
}

// UpdateCatalog applies fn to the catalog in KV with check-and-set, retrying when
// another writer (another sidecar's catch-up listing) won, at most attempts
// times (0: 5). fn gets the current versions and returns the new ones.
func (s *Store) UpdateCatalog(ctx context.Context, attempts int, fn func([]Version) []Version) error {
	if attempts <= 0 {
		attempts = 5
	}
	delay := s.cfg.BackoffMin
	var err error
	for range attempts {
		var cur []Version
		var w Written
		cur, w, err = s.ReadCatalog(ctx)
		switch {
		case errors.Is(err, ErrInconsistent):
			// Another writer is half-way: never write over what we could not read.
		case err != nil:
			return err
		default:
			if _, err = s.WriteCatalog(ctx, fn(cur), w); !errors.Is(err, ErrConflict) {
				return err
			}
		}
		if !sleepCtx(ctx, delay) {
			return ctx.Err()
		}
		delay = min(delay*2, s.cfg.BackoffMax)
	}
	return err
}
