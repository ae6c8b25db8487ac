package placement

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/tfgate/tfgate/internal/testenv"
)

func newStore(t *testing.T) (*testenv.Consul, *api.Client, *Store) {
	t.Helper()
	c := testenv.StartConsul(t)
	cl := c.Client(t)
	return c, cl, NewStore(cl, StoreConfig{Prefix: "t", WaitTime: 2 * time.Second, BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond})
}

// fleetAssignment is the 50,000 x 20 benchmark fleet's assignment.
func fleetAssignment(t testing.TB, share float64) *Decision {
	d, err := Decide(fleet(50000, 20, share))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func assignmentsEqual(t *testing.T, got, want Assignment) {
	t.Helper()
	if len(got.Hosts) != len(want.Hosts) {
		t.Fatalf("got %d hosts, want %d", len(got.Hosts), len(want.Hosts))
	}
	for id, w := range want.Hosts {
		g := got.Hosts[id]
		if len(g.Entries) != len(w.Entries) {
			t.Fatalf("host %s: %d entries, want %d", id, len(g.Entries), len(w.Entries))
		}
		for i := range w.Entries {
			a, b := g.Entries[i], w.Entries[i]
			if a.Key != b.Key || a.Bytes != b.Bytes || a.Since.Unix() != b.Since.Unix() || a.Draining != b.Draining {
				t.Fatalf("host %s entry %d: %+v, want %+v", id, i, a, b)
			}
		}
	}
}

// TestStoreFleetRoundTrip: 50,000 models over 20 hosts written to a real Consul
// within its value and transaction limits, read back whole; a one-model change
// rewrites one shard of one host.
func TestStoreFleetRoundTrip(t *testing.T) {
	_, cl, s := newStore(t)
	ctx := t.Context()
	d := fleetAssignment(t, 1.5)
	st, err := s.ReadState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.WriteAssignment(ctx, "", d.Assignment, st)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first write: %d hosts, %d value bytes for %d copies", res.HostsWritten, res.Bytes, d.Stats.Copies)
	pairs, _, err := cl.KV().List("t/", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pairs {
		if len(p.Value) > MaxValueBytes {
			t.Errorf("%s is %d bytes, over Consul's limit", p.Key, len(p.Value))
		}
	}
	got, err := s.ReadState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Broken) != 0 {
		t.Fatalf("broken hosts: %v", got.Broken)
	}
	assignmentsEqual(t, got.Assignment, d.Assignment)

	// One model moves: two hosts change, one shard each.
	a := Assignment{Hosts: map[string]HostAssignment{}}
	for id, ha := range d.Assignment.Hosts {
		a.Hosts[id] = HostAssignment{Pool: ha.Pool, Entries: append([]Entry(nil), ha.Entries...)}
	}
	h := "serving-03"
	e := a.Hosts[h].Entries[0]
	a.Hosts[h] = HostAssignment{Pool: a.Hosts[h].Pool, Entries: a.Hosts[h].Entries[1:]}
	h2 := "serving-04"
	es := append(a.Hosts[h2].Entries, e)
	sortEntries(es)
	a.Hosts[h2] = HostAssignment{Pool: a.Hosts[h2].Pool, Entries: es}
	res, err = s.WriteAssignment(ctx, "", a, got)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("moving one model: %d hosts, %d value bytes", res.HostsWritten, res.Bytes)
	if res.HostsWritten != 2 || res.Bytes > 20000 {
		t.Errorf("moving one model wrote %d hosts, %d bytes; want 2 hosts, one shard each", res.HostsWritten, res.Bytes)
	}
	again, err := s.ReadState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	assignmentsEqual(t, again.Assignment, a)
	after, _, _ := cl.KV().Keys("t/placement/default/"+h+"/", "", nil)
	if len(after) != DefaultShards+1 {
		t.Errorf("host %s has %d keys after the update, want %d (stale shard generation deleted)", h, len(after), DefaultShards+1)
	}
}

// TestStoreCheckAndSet: two writers from the same read: the second loses; a
// writer whose session does not hold the leader lock cannot write at all.
func TestStoreCheckAndSet(t *testing.T) {
	_, cl, s := newStore(t)
	ctx := t.Context()
	a := Assignment{Hosts: map[string]HostAssignment{"h1": {Pool: "default", Entries: []Entry{{Key: k("a", 1), Bytes: 10, Since: t0}}}}}
	b := Assignment{Hosts: map[string]HostAssignment{"h1": {Pool: "default", Entries: []Entry{{Key: k("b", 1), Bytes: 10, Since: t0}}}}}
	st1, _ := s.ReadState(ctx)
	st2, _ := s.ReadState(ctx)
	if _, err := s.WriteAssignment(ctx, "", a, st1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteAssignment(ctx, "", b, st2); !errors.Is(err, ErrConflict) {
		t.Fatalf("second writer from a stale read: %v, want ErrConflict", err)
	}
	got, _ := s.ReadState(ctx)
	assignmentsEqual(t, got.Assignment, a)

	// A session that does not hold the lock.
	sess, _, err := cl.Session().Create(&api.SessionEntry{TTL: "10s", Behavior: api.SessionBehaviorRelease}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Session().Destroy(sess, nil)
	if _, err := s.WriteAssignment(ctx, sess, b, got); !errors.Is(err, ErrConflict) {
		t.Fatalf("write with a session that does not hold the lock: %v, want ErrConflict", err)
	}
	// Holding it, the same write succeeds.
	if ok, _, err := cl.KV().Acquire(&api.KVPair{Key: s.LockKey(), Session: sess}, nil); err != nil || !ok {
		t.Fatalf("acquire: %v %v", ok, err)
	}
	if _, err := s.WriteAssignment(ctx, sess, b, got); err != nil {
		t.Fatalf("write holding the lock: %v", err)
	}
}

func recvView(t *testing.T, ch <-chan HostView) HostView {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(20 * time.Second):
		t.Fatal("no assignment delivered")
	}
	return HostView{}
}

func noView(t *testing.T, ch <-chan HostView, d time.Duration) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("unexpected delivery: generation %d, %d entries", v.Manifest.Generation, len(v.Assignment.Entries))
	case <-time.After(d):
	}
}

// TestStoreWatchHost: the watcher delivers whole assignments only; a torn update
// and an unreachable Consul deliver nothing (the receiver keeps the last good
// one); after Consul comes back empty (index gone backwards) it resumes.
func TestStoreWatchHost(t *testing.T) {
	c, cl, s := newStore(t)
	if testing.Verbose() {
		s.cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx, cancel := context.WithCancel(t.Context())
	ch := make(chan HostView)
	done := make(chan error, 1)
	go func() { done <- s.WatchHost(ctx, "default", "h1", ch) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("WatchHost: %v", err)
		}
	}()

	a := Assignment{Hosts: map[string]HostAssignment{"h1": {Pool: "default", Entries: []Entry{{Key: k("a", 1), Bytes: 10, Since: t0}}}}}
	st, _ := s.ReadState(ctx)
	if _, err := s.WriteAssignment(ctx, "", a, st); err != nil {
		t.Fatal(err)
	}
	v := recvView(t, ch)
	if !reflect.DeepEqual(keysOf(v.Assignment.Entries), []Key{k("a", 1)}) {
		t.Fatalf("delivered %v", keysOf(v.Assignment.Entries))
	}

	// A torn update: a manifest naming a shard generation that is not there.
	m := st.Written["h1"].Manifest
	m.Generation += 100
	m.Shards[ShardOf("a", DefaultShards)].Gen += 100
	m.Shards[ShardOf("a", DefaultShards)].Sum = "0"
	if _, err := cl.KV().Put(&api.KVPair{Key: s.HostPrefix("default", "h1") + "manifest", Value: EncodeManifest(m)}, nil); err != nil {
		t.Fatal(err)
	}
	noView(t, ch, 500*time.Millisecond)

	// Consul goes away: nothing delivered, watcher keeps trying.
	c.Stop(t)
	noView(t, ch, 500*time.Millisecond)
	c.Start(t) // a -dev agent comes back empty, its index lower than before

	b := Assignment{Hosts: map[string]HostAssignment{"h1": {Pool: "default", Entries: []Entry{{Key: k("b", 2), Bytes: 10, Since: t0}}}}}
	st2, err := s.ReadState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteAssignment(ctx, "", b, st2); err != nil {
		t.Fatal(err)
	}
	v = recvView(t, ch)
	if !reflect.DeepEqual(keysOf(v.Assignment.Entries), []Key{k("b", 2)}) {
		t.Fatalf("after the restart delivered %v", keysOf(v.Assignment.Entries))
	}
}

func keysOf(es []Entry) []Key {
	var ks []Key
	for _, e := range es {
		ks = append(ks, e.Key)
	}
	return ks
}

func TestStoreReportsAndCatalog(t *testing.T) {
	_, _, s := newStore(t)
	ctx := t.Context()
	now := time.Now().UTC().Truncate(time.Second)
	if err := s.PutStatus(ctx, HostStatus{Host: "h1", Updated: now, Resident: []StatusVersion{{Model: "a", Version: 1, Bytes: 42}},
		Failures: []StatusFailure{{Model: "b", Version: 1, Reason: "OOM", At: now, Until: now.Add(time.Minute)}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutStatus(ctx, HostStatus{Host: "stale", Updated: now.Add(-time.Hour), Resident: []StatusVersion{{Model: "c", Version: 1}}}); err != nil {
		t.Fatal(err)
	}
	for _, g := range []DemandReport{
		{Gateway: "g1", Updated: now, Versions: []DemandVersion{{Model: "a", Version: 1, Rate: 2, LastUsed: now.Add(-time.Second)}}},
		{Gateway: "g2", Updated: now, Versions: []DemandVersion{{Model: "a", Version: 1, Rate: 3, LastUsed: now}}},
		{Gateway: "old", Updated: now.Add(-time.Hour), Versions: []DemandVersion{{Model: "a", Version: 1, Rate: 100, LastUsed: now}}},
	} {
		if err := s.PutDemand(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	r, err := s.ReadReports(ctx)
	if err != nil {
		t.Fatal(err)
	}
	res, fails := r.Inputs(now.Add(-time.Minute))
	if len(res) != 1 || res[0].Host != "h1" || res[0].Bytes != 42 || len(fails) != 1 || fails[0].Reason != "OOM" {
		t.Errorf("inputs: resident %+v failures %+v", res, fails)
	}
	dm := MergeDemand(r.Demand, now.Add(-time.Minute))
	if got := dm[k("a", 1)]; got.Rate != 5 || !got.LastUsed.Equal(now) {
		t.Errorf("merged demand %+v, want rate 5 (stale gateway ignored), last used %v", got, now)
	}

	cat := fleet(50000, 1, 1).Catalog
	vs, w, err := s.ReadCatalog(ctx)
	if err != nil || vs != nil {
		t.Fatalf("empty catalog: %v %v", vs, err)
	}
	w2, err := s.WriteCatalog(ctx, cat, w)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteCatalog(ctx, cat[:10], w); !errors.Is(err, ErrConflict) {
		t.Fatalf("catalog write from a stale read: %v, want ErrConflict", err)
	}
	got, w3, err := s.ReadCatalog(ctx)
	if err != nil || len(got) != len(cat) || w3.Index != w2.Index {
		t.Fatalf("catalog read: %d versions, %v", len(got), err)
	}
	// The cached read follows a rewrite of the catalog.
	var cache CatalogCache
	for i, want := range []int{len(cat), len(cat), 10} {
		if i == 2 {
			if _, err := s.WriteCatalog(ctx, cat[:10], w3); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.ReadCatalogCached(ctx, &cache)
		if err != nil || len(got) != want {
			t.Fatalf("cached catalog read %d: %d versions, %v; want %d", i, len(got), err, want)
		}
	}
}

// TestStoreSplitsLargeWrites: a host whose shards exceed one transaction's byte
// budget is written shards first, manifest last, and reads back whole.
func TestStoreSplitsLargeWrites(t *testing.T) {
	c := testenv.StartConsul(t)
	s := NewStore(c.Client(t), StoreConfig{Prefix: "t", MaxTxnBytes: 8 << 10})
	ctx := t.Context()
	a := Assignment{Hosts: map[string]HostAssignment{"h1": {Pool: "gpu", Entries: entriesN(20000)}}}
	st, _ := s.ReadState(ctx)
	res, err := s.WriteAssignment(ctx, "", a, st)
	if err != nil {
		t.Fatal(err)
	}
	if res.Bytes < 4*(8<<10) {
		t.Fatalf("wrote only %d bytes; the test does not split", res.Bytes)
	}
	got, err := s.ReadState(ctx)
	if err != nil || len(got.Broken) != 0 {
		t.Fatalf("read: %v, broken %v", err, got.Broken)
	}
	assignmentsEqual(t, got.Assignment, a)
}

// TestStoreUpdateCatalogRaces: sidecars adding versions concurrently all land.
func TestStoreUpdateCatalogRaces(t *testing.T) {
	_, _, s := newStore(t)
	ctx := t.Context()
	errs := make(chan error, 4)
	for i := range 4 {
		go func() {
			errs <- s.UpdateCatalog(ctx, 20, func(cur []Version) []Version {
				return append(cur, Version{Key: Key{Model: "m" + string(rune('a'+i)), Version: 1}, ObjectBytes: 10})
			})
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	got, _, err := s.ReadCatalog(ctx)
	if err != nil || len(got) != 4 {
		t.Fatalf("catalog %v, %v: want the 4 versions", got, err)
	}
}

// TestStoreWatchState: a gateway's view of the whole placement follows writes.
func TestStoreWatchState(t *testing.T) {
	_, _, s := newStore(t)
	ctx, cancel := context.WithCancel(t.Context())
	ch := make(chan *Stored)
	done := make(chan error, 1)
	go func() { done <- s.WatchState(ctx, ch) }()
	defer func() { cancel(); <-done }()
	first := <-ch
	if len(first.Assignment.Hosts) != 0 {
		t.Fatalf("empty store delivered %d hosts", len(first.Assignment.Hosts))
	}
	a := Assignment{Hosts: map[string]HostAssignment{
		"h1": {Pool: "gpu", Entries: []Entry{{Key: k("a", 1), Bytes: 1, Since: t0}}},
		"h2": {Pool: "cpu", Entries: []Entry{{Key: k("b", 1), Bytes: 1, Since: t0}}},
	}}
	next := func(what string, ok func(*Stored) bool) *Stored {
		for {
			select {
			case got := <-ch:
				if ok(got) {
					return got
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("no update with %s", what)
			}
		}
	}
	st, _ := s.ReadState(ctx)
	if _, err := s.WriteAssignment(ctx, "", a, st); err != nil {
		t.Fatal(err)
	}
	got := next("both hosts", func(st *Stored) bool { return len(st.Assignment.Hosts) == 2 })
	assignmentsEqual(t, got.Assignment, a)

	// One host rewritten: the update has its new entries and the other's, which
	// the watch did not decode again.
	b := Assignment{Hosts: map[string]HostAssignment{
		"h1": {Pool: "gpu", Entries: []Entry{{Key: k("a", 1), Bytes: 1, Since: t0}, {Key: k("c", 2), Bytes: 3, Since: t0}}},
		"h2": a.Hosts["h2"],
	}}
	st, _ = s.ReadState(ctx)
	if _, err := s.WriteAssignment(ctx, "", b, st); err != nil {
		t.Fatal(err)
	}
	got = next("h1 rewritten", func(st *Stored) bool { return len(st.Assignment.Hosts["h1"].Entries) == 2 })
	assignmentsEqual(t, got.Assignment, b)
}
