package placement

import (
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const mb = 1 << 20

func mkHosts(n int, capacity int64) []Host {
	hs := make([]Host, n)
	for i := range hs {
		hs[i] = Host{ID: fmt.Sprintf("host-%02d", i), CapacityBytes: capacity}
	}
	return hs
}

func mkCatalog(n int, size int64) []Version {
	vs := make([]Version, n)
	for i := range vs {
		vs[i] = Version{Key: Key{Model: fmt.Sprintf("m%05d", i), Version: 1}, ObjectBytes: size}
	}
	return vs
}

func k(model string, v int64) Key { return Key{Model: model, Version: v} }

// multiplier 1 so sizes read as given.
func cfg1() Config {
	return Config{Default: PoolConfig{MemoryMultiplier: 1, MinResidency: time.Minute}}
}

func mustDecide(t testing.TB, in Input) *Decision {
	t.Helper()
	d, err := Decide(in)
	if err != nil {
		t.Fatalf("Decide: %v", err)
	}
	checkCapacity(t, in, d)
	return d
}

// checkCapacity asserts the invariant every decision keeps: no host over capacity.
func checkCapacity(t testing.TB, in Input, d *Decision) {
	t.Helper()
	caps := map[string]int64{}
	for _, h := range in.Hosts {
		caps[h.ID] = h.CapacityBytes
	}
	for id, ha := range d.Assignment.Hosts {
		var used int64
		seen := map[Key]bool{}
		for _, e := range ha.Entries {
			used += e.Bytes
			if seen[e.Key] {
				t.Fatalf("host %s holds %s twice", id, e.Key)
			}
			seen[e.Key] = true
		}
		if used > caps[id] {
			t.Fatalf("host %s assigned %d bytes, capacity %d", id, used, caps[id])
		}
	}
}

func hostsOf(d *Decision, key Key) []string {
	for _, v := range d.Versions {
		if v.Key == key {
			return v.Hosts
		}
	}
	return nil
}

func stateOf(d *Decision, key Key) VersionState {
	for _, v := range d.Versions {
		if v.Key == key {
			return v
		}
	}
	return VersionState{}
}

func TestDecideBasics(t *testing.T) {
	ids := hostIDs(4)
	a := k("a", 1)
	first := Rank(a, ids, nil)
	tests := []struct {
		name      string
		in        Input
		wantHosts []string
		wantState State
		wantWhy   string
	}{
		{
			name: "demanded version goes to its first candidate",
			in: Input{Hosts: mkHosts(4, 100*mb), Catalog: []Version{{Key: a, ObjectBytes: 10 * mb}},
				Demand: map[Key]Demand{a: {Rate: 1, LastUsed: t0}}},
			wantHosts: first[:1], wantState: Placed,
		},
		{
			name: "full first candidate overflows to the second",
			in: Input{Hosts: mkHosts(4, 100*mb),
				Catalog:  []Version{{Key: a, ObjectBytes: 10 * mb}, {Key: k("big", 1), ObjectBytes: 95 * mb}},
				Required: []Requirement{{Key: k("big", 1), Pinned: true}},
				// "big" is pinned to first[0] by a previous assignment.
				Previous: &Assignment{Hosts: map[string]HostAssignment{first[0]: {Entries: []Entry{{Key: k("big", 1), Bytes: 95 * mb, Since: t0}}}}},
				Demand:   map[Key]Demand{a: {Rate: 1, LastUsed: t0}}},
			wantHosts: first[1:2], wantState: Placed,
		},
		{
			name: "demand adds copies",
			in: Input{Hosts: mkHosts(4, 100*mb), Catalog: []Version{{Key: a, ObjectBytes: 10 * mb}},
				Demand: map[Key]Demand{a: {Rate: 250, LastUsed: t0}}},
			wantHosts: first[:3], wantState: Placed,
		},
		{
			name: "max copies caps demand",
			in: Input{Hosts: mkHosts(4, 100*mb), Catalog: []Version{{Key: a, ObjectBytes: 10 * mb}},
				Demand: map[Key]Demand{a: {Rate: 1e6, LastUsed: t0}}},
			wantHosts: first[:3], wantState: Placed,
		},
		{
			name: "larger than every host is unplaceable",
			in: Input{Hosts: mkHosts(4, 100*mb), Catalog: []Version{{Key: a, ObjectBytes: 200 * mb}},
				Demand: map[Key]Demand{a: {Rate: 1, LastUsed: t0}}},
			wantState: Unplaceable, wantWhy: "largest host",
		},
		{
			name: "no size is unplaceable",
			in: Input{Hosts: mkHosts(4, 100*mb), Catalog: []Version{{Key: a}},
				Demand: map[Key]Demand{a: {Rate: 1, LastUsed: t0}}},
			wantState: Unplaceable, wantWhy: "no size",
		},
		{
			name: "reported size replaces the estimate",
			in: Input{Hosts: mkHosts(4, 100*mb), Catalog: []Version{{Key: a, ObjectBytes: 200 * mb}},
				Resident: []Resident{{Host: first[2], Key: a, Bytes: 50 * mb}},
				Demand:   map[Key]Demand{a: {Rate: 1, LastUsed: t0}}},
			wantHosts: first[:1], wantState: Placed,
		},
		{
			name: "load-failure backoff places on the next candidate",
			in: Input{Hosts: mkHosts(4, 100*mb), Catalog: []Version{{Key: a, ObjectBytes: 10 * mb}},
				Failures: []Failure{{Host: first[0], Key: a, Until: t0.Add(time.Minute), Reason: "OOM"}},
				Demand:   map[Key]Demand{a: {Rate: 1, LastUsed: t0}}},
			wantHosts: first[1:2], wantState: Placed,
		},
		{
			name: "an expired backoff does not count",
			in: Input{Hosts: mkHosts(4, 100*mb), Catalog: []Version{{Key: a, ObjectBytes: 10 * mb}},
				Failures: []Failure{{Host: first[0], Key: a, Until: t0, Reason: "OOM"}},
				Demand:   map[Key]Demand{a: {Rate: 1, LastUsed: t0}}},
			wantHosts: first[:1], wantState: Placed,
		},
		{
			name: "a failed copy leaves its host",
			in: Input{Hosts: mkHosts(4, 100*mb), Catalog: []Version{{Key: a, ObjectBytes: 10 * mb}},
				Previous: &Assignment{Hosts: map[string]HostAssignment{first[0]: {Entries: []Entry{{Key: a, Bytes: 10 * mb, Since: t0}}}}},
				Failures: []Failure{{Host: first[0], Key: a, Until: t0.Add(time.Minute), Reason: "OOM"}}},
			wantHosts: first[1:2], wantState: Placed,
		},
		{
			name: "every candidate in backoff is pending",
			in: Input{Hosts: mkHosts(2, 100*mb), Catalog: []Version{{Key: a, ObjectBytes: 10 * mb}},
				Failures: []Failure{{Host: "host-00", Key: a, Until: t0.Add(time.Minute)}, {Host: "host-01", Key: a, Until: t0.Add(time.Minute)}},
				Demand:   map[Key]Demand{a: {Rate: 1, LastUsed: t0}}},
			wantState: Pending, wantWhy: "backoff",
		},
		{
			name: "a pool without hosts is unplaceable",
			in: Input{Hosts: mkHosts(2, 100*mb), Catalog: []Version{{Key: a, ObjectBytes: 10 * mb}},
				ModelPools: map[string]string{"a": "gpu"},
				Demand:     map[Key]Demand{a: {Rate: 1, LastUsed: t0}}},
			wantState: Unplaceable, wantWhy: `pool "gpu"`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.in.Now = t0
			tc.in.Config = cfg1()
			d := mustDecide(t, tc.in)
			st := stateOf(d, a)
			if !reflect.DeepEqual(st.Hosts, tc.wantHosts) || st.State != tc.wantState {
				t.Errorf("%s: hosts %v state %v (%s), want %v %v", a, st.Hosts, st.State, st.Why, tc.wantHosts, tc.wantState)
			}
			if !strings.Contains(st.Why, tc.wantWhy) {
				t.Errorf("why %q, want it to contain %q", st.Why, tc.wantWhy)
			}
		})
	}
}

func TestDecideHostWithoutCapacityIsReported(t *testing.T) {
	hs := append(mkHosts(2, 100*mb), Host{ID: "nocap"})
	d := mustDecide(t, Input{Now: t0, Config: cfg1(), Hosts: hs, Catalog: mkCatalog(50, mb),
		Demand: demandAll(mkCatalog(50, mb), 1, t0)})
	if len(d.Assignment.Hosts["nocap"].Entries) != 0 {
		t.Errorf("host without capacity got %d entries", len(d.Assignment.Hosts["nocap"].Entries))
	}
	if len(d.Problems) != 1 || d.Problems[0].Kind != HostNoCapacity || d.Problems[0].Host != "nocap" {
		t.Errorf("problems %+v, want one HostNoCapacity for nocap", d.Problems)
	}
}

// TestDecideBadSizes: catalog entries without a usable size (missing, negative)
// and versions larger than any host (by catalog size, by an absurd size that
// would overflow once multiplied, by what a host reported) are Unplaceable, each
// with a Problem that says what to fix, and take no room from the rest.
func TestDecideBadSizes(t *testing.T) {
	hosts := mkHosts(2, 300*mb)
	ok := Version{Key: k("ok", 1), ObjectBytes: 10 * mb}
	cat := []Version{ok, {Key: k("zero", 1)}, {Key: k("neg", 1), ObjectBytes: -5},
		{Key: k("huge", 1), ObjectBytes: 400 * mb}, {Key: k("absurd", 1), ObjectBytes: math.MaxInt64},
		{Key: k("grown", 1), ObjectBytes: 10 * mb}}
	cfg := cfg1()
	cfg.Default.MemoryMultiplier = 1.5
	d := mustDecide(t, Input{Now: t0, Config: cfg, Hosts: hosts, Catalog: cat, Demand: demandAll(cat, 1, t0),
		Resident: []Resident{{Host: "host-00", Key: k("grown", 1), Bytes: 500 * mb}}})
	if got := hostsOf(d, ok.Key); len(got) != 1 {
		t.Errorf("ok@1 on %v, want one host", got)
	}
	want := map[Key][2]string{
		k("zero", 1):   {"bad_catalog_entry", "ok@1"},
		k("neg", 1):    {"bad_catalog_entry", "(-5 bytes)"},
		k("huge", 1):   {"version_too_large", "needs 629145600 bytes (object 419430400 bytes x memory_multiplier 1.5), more than the largest host in pool \"default\" (314572800 bytes)"},
		k("absurd", 1): {"version_too_large", "needs 9223372036854775807 bytes"},
		k("grown", 1):  {"version_too_large", "needs 524288000 bytes (reported by a host)"},
	}
	for key, w := range want {
		if st := stateOf(d, key); st.State != Unplaceable || len(st.Hosts) != 0 {
			t.Errorf("%s: %v on %v, want unplaceable", key, st.State, st.Hosts)
		}
		found := false
		for _, p := range d.Problems {
			if p.Key == key {
				found = true
				if p.Kind.String() != w[0] || (key != k("zero", 1) && !strings.Contains(p.Message, w[1])) {
					t.Errorf("%s: problem %s %q, want %s containing %q", key, p.Kind, p.Message, w[0], w[1])
				}
				t.Logf("%s: %s", p.Kind, p.Message)
			}
		}
		if !found {
			t.Errorf("%s: no problem reported; problems %+v", key, d.Problems)
		}
	}
	if d.Stats.Placed != 1 || d.Stats.Pending != len(want) {
		t.Errorf("stats %+v, want 1 placed, %d pending", d.Stats, len(want))
	}
}

func demandAll(cat []Version, rate float64, at time.Time) map[Key]Demand {
	m := make(map[Key]Demand, len(cat))
	for _, v := range cat {
		m[v.Key] = Demand{Rate: rate, LastUsed: at}
	}
	return m
}

// TestDecideDeterministic: the same snapshot in any order gives the same decision,
// and deciding again from its own output changes nothing (a new leader continues
// from KV without reshuffling).
func TestDecideDeterministic(t *testing.T) {
	cat := mkCatalog(2000, 10*mb)
	in := Input{Now: t0, Config: cfg1(), Hosts: mkHosts(6, 1000*mb), Catalog: cat, Demand: map[Key]Demand{}}
	r := rand.New(rand.NewPCG(1, 2))
	for i, v := range cat {
		in.Demand[v.Key] = Demand{Rate: r.Float64() * 300, LastUsed: t0.Add(-time.Duration(i) * time.Second)}
	}
	in.Required = []Requirement{{Key: cat[7].Key, Reason: "default"}, {Key: cat[9].Key, Pinned: true}}
	d1 := mustDecide(t, in)

	shuffled := in
	shuffled.Hosts = append([]Host(nil), in.Hosts...)
	shuffled.Catalog = append([]Version(nil), in.Catalog...)
	r.Shuffle(len(shuffled.Hosts), func(i, j int) { shuffled.Hosts[i], shuffled.Hosts[j] = shuffled.Hosts[j], shuffled.Hosts[i] })
	r.Shuffle(len(shuffled.Catalog), func(i, j int) {
		shuffled.Catalog[i], shuffled.Catalog[j] = shuffled.Catalog[j], shuffled.Catalog[i]
	})
	d2 := mustDecide(t, shuffled)
	if !reflect.DeepEqual(d1.Assignment, d2.Assignment) {
		t.Fatal("assignment depends on input order")
	}

	again := in
	again.Previous = &d1.Assignment
	again.Now = t0.Add(time.Hour)
	d3 := mustDecide(t, again)
	if d3.Stats.Added != 0 || d3.Stats.Removed != 0 || d3.Stats.Moved != 0 {
		t.Fatalf("deciding from its own output changed things: %+v", d3.Stats)
	}
	if !reflect.DeepEqual(d1.Assignment, d3.Assignment) {
		t.Fatal("assignment changed when decided again from itself")
	}
	if d1.Stats.Evicted != 0 || d1.Stats.Pending == 0 {
		t.Logf("stats %+v", d1.Stats)
	}
}

// TestDecideHysteresis: demand hovering at a copy boundary does not flap.
func TestDecideHysteresis(t *testing.T) {
	a := k("a", 1)
	in := Input{Now: t0, Config: cfg1(), Hosts: mkHosts(4, 100*mb), Catalog: []Version{{Key: a, ObjectBytes: mb}}}
	steps := []struct {
		rate float64
		want int
	}{
		{50, 1}, {110, 1}, {120, 1}, {130, 2}, {110, 2}, {90, 2}, {80, 2}, {70, 1}, {95, 1}, {260, 3}, {210, 3}, {160, 3}, {140, 2},
	}
	for i, s := range steps {
		in.Demand = map[Key]Demand{a: {Rate: s.rate, LastUsed: in.Now}}
		d := mustDecide(t, in)
		if got := len(hostsOf(d, a)); got != s.want {
			t.Fatalf("step %d: rate %v gives %d copies, want %d (copy_rate 100, hysteresis 0.25)", i, s.rate, got, s.want)
		}
		in.Previous = &d.Assignment
		in.Now = in.Now.Add(10 * time.Second)
	}
}

// TestDecideLRUEviction: a new version evicts the least recently used unpinned
// version past its minimum residency, never a pinned, required or young one.
func TestDecideLRUEviction(t *testing.T) {
	// One host with room for 3 versions.
	hosts := mkHosts(1, 30*mb)
	cat := mkCatalog(6, 10*mb)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	prev := &Assignment{Hosts: map[string]HostAssignment{"host-00": {Entries: []Entry{
		{Key: cat[0].Key, Bytes: 10 * mb, Since: at(0)},
		{Key: cat[1].Key, Bytes: 10 * mb, Since: at(0)},
		{Key: cat[2].Key, Bytes: 10 * mb, Since: at(0)},
	}}}}
	now := at(10 * time.Minute)
	tests := []struct {
		name        string
		required    []Requirement
		since2      time.Time // when cat[2] was placed
		demand      map[Key]Demand
		wantHeld    []Key
		wantState3  State
		wantProblem bool
	}{
		{
			name: "oldest use is evicted",
			demand: map[Key]Demand{cat[0].Key: {LastUsed: at(3 * time.Minute)}, cat[1].Key: {LastUsed: at(1 * time.Minute)},
				cat[2].Key: {LastUsed: at(2 * time.Minute)}, cat[3].Key: {Rate: 1, LastUsed: now}},
			wantHeld: []Key{cat[0].Key, cat[2].Key, cat[3].Key}, wantState3: Placed,
		},
		{
			name:     "pinned is not evicted, the next oldest is",
			required: []Requirement{{Key: cat[1].Key, Pinned: true}},
			demand: map[Key]Demand{cat[0].Key: {LastUsed: at(3 * time.Minute)}, cat[1].Key: {LastUsed: at(1 * time.Minute)},
				cat[2].Key: {LastUsed: at(2 * time.Minute)}, cat[3].Key: {Rate: 1, LastUsed: now}},
			wantHeld: []Key{cat[0].Key, cat[1].Key, cat[3].Key}, wantState3: Placed,
		},
		{
			// cat[2], the least requested, is younger than min residency; the
			// others are requested more than the newcomer.
			name:   "young versions are protected by min residency",
			since2: now.Add(-30 * time.Second),
			demand: map[Key]Demand{cat[0].Key: {Rate: 2, LastUsed: at(5 * time.Minute)}, cat[1].Key: {Rate: 2, LastUsed: at(5 * time.Minute)},
				cat[2].Key: {LastUsed: at(1 * time.Minute)}, cat[3].Key: {Rate: 1, LastUsed: at(4 * time.Minute)}},
			wantHeld: []Key{cat[0].Key, cat[1].Key, cat[2].Key}, wantState3: Pending,
		},
		{
			name: "with no rates, an unrequired newcomer does not evict more recently used versions",
			demand: map[Key]Demand{cat[0].Key: {LastUsed: at(5 * time.Minute)}, cat[1].Key: {LastUsed: at(5 * time.Minute)},
				cat[2].Key: {LastUsed: at(5 * time.Minute)}, cat[3].Key: {LastUsed: at(4 * time.Minute)}},
			wantHeld: []Key{cat[0].Key, cat[1].Key, cat[2].Key}, wantState3: Pending,
		},
		{
			// The churn LRU alone suffers under Zipf traffic: a version asked
			// for once (a low rate, just now) must not evict versions requested
			// more, however recently it was used.
			name: "a newcomer asked for once does not evict more requested versions",
			demand: map[Key]Demand{cat[0].Key: {Rate: 0.5, LastUsed: at(5 * time.Minute)}, cat[1].Key: {Rate: 0.2, LastUsed: at(5 * time.Minute)},
				cat[2].Key: {Rate: 3, LastUsed: at(5 * time.Minute)}, cat[3].Key: {Rate: 0.1, LastUsed: now}},
			wantHeld: []Key{cat[0].Key, cat[1].Key, cat[2].Key}, wantState3: Pending,
		},
		{
			name: "a newcomer evicts the least requested version, however recently that was used",
			demand: map[Key]Demand{cat[0].Key: {Rate: 0.5, LastUsed: at(9 * time.Minute)}, cat[1].Key: {Rate: 0.05, LastUsed: at(9 * time.Minute)},
				cat[2].Key: {Rate: 3, LastUsed: at(1 * time.Minute)}, cat[3].Key: {Rate: 0.1, LastUsed: now}},
			wantHeld: []Key{cat[0].Key, cat[2].Key, cat[3].Key}, wantState3: Placed,
		},
		{
			name:     "a required newcomer evicts even recently used versions",
			required: []Requirement{{Key: cat[3].Key, Reason: "label stable"}},
			demand: map[Key]Demand{cat[0].Key: {LastUsed: at(5 * time.Minute)}, cat[1].Key: {LastUsed: at(6 * time.Minute)},
				cat[2].Key: {LastUsed: at(7 * time.Minute)}},
			wantHeld: []Key{cat[1].Key, cat[2].Key, cat[3].Key}, wantState3: Placed,
		},
		{
			name:     "required versions that do not fit are reported",
			required: []Requirement{{Key: cat[0].Key, Pinned: true}, {Key: cat[1].Key, Pinned: true}, {Key: cat[2].Key, Reason: "default"}, {Key: cat[3].Key, Reason: "arm b of exp"}},
			wantHeld: []Key{cat[0].Key, cat[1].Key, cat[2].Key}, wantState3: Pending, wantProblem: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &Assignment{Hosts: map[string]HostAssignment{"host-00": {Entries: append([]Entry(nil), prev.Hosts["host-00"].Entries...)}}}
			if !tc.since2.IsZero() {
				p.Hosts["host-00"].Entries[2].Since = tc.since2
			}
			d := mustDecide(t, Input{Now: now, Config: cfg1(), Hosts: hosts, Catalog: cat, Demand: tc.demand,
				Required: tc.required, Previous: p})
			var held []Key
			for _, e := range d.Assignment.Hosts["host-00"].Entries {
				held = append(held, e.Key)
			}
			if !reflect.DeepEqual(held, tc.wantHeld) {
				t.Errorf("host holds %v, want %v", held, tc.wantHeld)
			}
			if st := stateOf(d, cat[3].Key); st.State != tc.wantState3 {
				t.Errorf("%s is %v (%s), want %v", cat[3].Key, st.State, st.Why, tc.wantState3)
			}
			var got bool
			for _, pr := range d.Problems {
				if pr.Kind == RequiredNotResident && pr.Key == cat[3].Key {
					got = true
				}
			}
			if got != tc.wantProblem {
				t.Errorf("RequiredNotResident for %s reported %v, want %v (problems %+v)", cat[3].Key, got, tc.wantProblem, d.Problems)
			}
		})
	}
}

// churnRun replays cyclic demand over more versions than fit: every step one
// version of the cycle is requested. It returns loads (copies added after the
// fleet filled) and evictions of copies younger than minRes.
func churnRun(t *testing.T, minRes time.Duration) (loads, youngEvictions int) {
	const models, fit = 40, 10
	cat := mkCatalog(models, 10*mb)
	in := Input{Now: t0, Hosts: mkHosts(2, fit/2*10*mb), Catalog: cat, Demand: map[Key]Demand{},
		Config: Config{Default: PoolConfig{MemoryMultiplier: 1, MinResidency: minRes}}}
	since := map[hostKey]time.Time{}
	for step := range 400 {
		v := cat[step%models].Key
		in.Demand[v] = Demand{Rate: 0.5, LastUsed: in.Now}
		d := mustDecide(t, in)
		cur := map[hostKey]time.Time{}
		for i, h := range in.Hosts {
			for _, e := range d.Assignment.Hosts[h.ID].Entries {
				cur[hostKey{i, e.Key}] = e.Since
			}
		}
		for hk, s := range since {
			if _, ok := cur[hk]; !ok && in.Now.Sub(s) < 5*time.Minute {
				youngEvictions++
			}
		}
		if step >= models {
			loads += d.Stats.Added
		}
		since = cur
		in.Previous = &d.Assignment
		in.Now = in.Now.Add(5 * time.Second)
	}
	return loads, youngEvictions
}

// TestDecideChurnGuard: when traffic cycles through more versions than fit, the
// minimum residency keeps the policy from reloading on every request
// (kserve/modelmesh-serving#341). Without the guard (min residency ~0) every step
// evicts one version and loads another.
func TestDecideChurnGuard(t *testing.T) {
	loads, young := churnRun(t, 5*time.Minute)
	noGuardLoads, noGuardYoung := churnRun(t, time.Nanosecond)
	t.Logf("cyclic demand, 360 steps of 5s: with a 5m min residency %d loads, %d young evictions; without %d loads, %d young evictions",
		loads, young, noGuardLoads, noGuardYoung)
	if young != 0 {
		t.Errorf("%d copies evicted before their 5m minimum residency, want 0", young)
	}
	// 360 steps x 5s = 30 min: at most capacity (10) loads per 5 min period.
	if loads > 10*(30/5+1) {
		t.Errorf("%d loads with the churn guard, want <= %d", loads, 10*(30/5+1))
	}
	if noGuardLoads < 300 {
		t.Errorf("control run without the guard loaded only %d times; the test no longer shows thrash", noGuardLoads)
	}
}

// movement counts the versions whose set of hosts differs between two decisions.
func movement(a, b *Decision) (moved, total int) {
	hb := map[Key]string{}
	for _, v := range b.Versions {
		hb[v.Key] = strings.Join(v.Hosts, ",")
	}
	for _, v := range a.Versions {
		if len(v.Hosts) == 0 {
			continue
		}
		total++
		if strings.Join(v.Hosts, ",") != hb[v.Key] {
			moved++
		}
	}
	return moved, total
}

// TestDecideHostLeaveJoin: a host leaving or joining moves about 1/N of versions.
func TestDecideHostLeaveJoin(t *testing.T) {
	const n = 10
	cat := mkCatalog(5000, 10*mb)
	in := Input{Now: t0, Config: cfg1(), Hosts: mkHosts(n, 8000*mb), Catalog: cat, Demand: demandAll(cat, 1, t0)}
	in.Config.MaxMoves = 1 << 20
	base := mustDecide(t, in)

	leave := in
	leave.Hosts = in.Hosts[:n-1]
	leave.Previous = &base.Assignment
	leave.Now = t0.Add(time.Hour)
	dl := mustDecide(t, leave)
	moved, total := movement(base, dl)
	frac := float64(moved) / float64(total)
	t.Logf("leave: 1 of %d hosts removed moved %d of %d versions (%.4f, 1/N = %.4f)", n, moved, total, frac, 1.0/n)
	if frac < 0.5/n || frac > 1.5/n {
		t.Errorf("leave moved %.4f of versions, want about 1/N = %.4f", frac, 1.0/n)
	}

	// Join: host-09 comes back. Moves are make-before-break: first the new copy
	// is added with the old one draining, then once the new host reports it
	// loaded the old one goes.
	join := in
	join.Previous = &dl.Assignment
	join.Now = t0.Add(2 * time.Hour)
	for _, v := range dl.Versions {
		for _, h := range v.Hosts {
			join.Resident = append(join.Resident, Resident{Host: h, Key: v.Key, Bytes: 10 * mb})
		}
	}
	dj := mustDecide(t, join)
	if dj.Stats.Moved == 0 {
		t.Fatal("no copies moved to the joining host")
	}
	for _, v := range dj.Versions {
		if len(v.Hosts) > 1 && len(v.Draining) != 1 {
			t.Fatalf("%s on %v, draining %v: a move must keep exactly the old copy draining", v.Key, v.Hosts, v.Draining)
		}
	}
	// The joining host reports what it was given; the old copies then go.
	settle := join
	settle.Previous = &dj.Assignment
	settle.Now = t0.Add(3 * time.Hour)
	for _, e := range dj.Assignment.Hosts["host-09"].Entries {
		settle.Resident = append(settle.Resident, Resident{Host: "host-09", Key: e.Key, Bytes: e.Bytes})
	}
	ds := mustDecide(t, settle)
	for _, v := range ds.Versions {
		if len(v.Hosts) != 1 {
			t.Fatalf("%s on %v after settling, want one copy", v.Key, v.Hosts)
		}
	}
	moved, total = movement(dl, ds)
	frac = float64(moved) / float64(total)
	t.Logf("join: 1 host added to %d moved %d of %d versions (%.4f, 1/N = %.4f)", n-1, moved, total, frac, 1.0/n)
	if frac < 0.5/n || frac > 1.5/n {
		t.Errorf("join moved %.4f of versions, want about 1/N = %.4f", frac, 1.0/n)
	}
	// Back where they started: rendezvous is memoryless once settled.
	if m, _ := movement(base, ds); m != 0 {
		t.Errorf("after leave and join %d versions are not where they started", m)
	}
}

func TestExplain(t *testing.T) {
	ids := hostIDs(3)
	a := k("a", 1)
	first := Rank(a, ids, nil)
	in := Input{Now: t0, Config: cfg1(), Hosts: mkHosts(3, 100*mb), Catalog: []Version{{Key: a, ObjectBytes: 10 * mb}},
		Required: []Requirement{{Key: a, Reason: "label stable"}},
		Failures: []Failure{{Host: first[0], Key: a, Until: t0.Add(time.Minute), Reason: "OOM while loading"}},
		Demand:   map[Key]Demand{a: {Rate: 5, LastUsed: t0}}}
	d := mustDecide(t, in)
	e, ok := d.Explain(a)
	if !ok {
		t.Fatal("no explanation")
	}
	if len(e.Candidates) != 3 || e.Candidates[0].Host != first[0] || e.Candidates[1].Chosen != true {
		t.Fatalf("candidates %+v", e.Candidates)
	}
	s := e.String()
	for _, want := range []string{"a@1: placed", "required (label stable)", "backoff", "OOM while loading", "* #1 " + first[1]} {
		if !strings.Contains(s, want) {
			t.Errorf("explanation lacks %q:\n%s", want, s)
		}
	}
	if _, ok := d.Explain(k("nope", 1)); ok {
		t.Error("explanation for a version never considered")
	}
}

func TestConfigValidate(t *testing.T) {
	c := Config{Default: PoolConfig{MinCopies: 3, MaxCopies: 2, Hysteresis: 1.5, CopyRate: -1},
		Pools: map[string]PoolConfig{"gpu": {MemoryMultiplier: -2}}}.WithDefaults()
	err := c.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"max_copies 2", "hysteresis 1.5", "copy_rate -1", `pool "gpu": memory_multiplier -2`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if err := (Config{}).WithDefaults().Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
}

// TestDecideFrozenHost: a host whose sidecar stopped reporting keeps its copies
// but they are not counted (each gets a copy on a live host), and it takes no
// new ones; new versions go to the next candidate.
func TestDecideFrozenHost(t *testing.T) {
	ids := hostIDs(3)
	a, b := k("a", 1), k("b", 1)
	rb := Rank(b, ids, nil)
	hosts := mkHosts(3, 100*mb)
	for i := range hosts {
		if hosts[i].ID == rb[0] {
			hosts[i].Frozen = true
		}
	}
	prev := &Assignment{Hosts: map[string]HostAssignment{rb[0]: {Entries: []Entry{{Key: a, Bytes: 10 * mb, Since: t0}}}}}
	d := mustDecide(t, Input{Now: t0.Add(time.Hour), Config: cfg1(), Hosts: hosts, Previous: prev,
		Catalog: []Version{{Key: a, ObjectBytes: 10 * mb}, {Key: b, ObjectBytes: 10 * mb}},
		Demand:  map[Key]Demand{a: {Rate: 1, LastUsed: t0}, b: {Rate: 1, LastUsed: t0}}})
	// a stays on the frozen host (nothing is unloaded for lack of an answer) but
	// that copy is not counted: a has its one copy on a live host too.
	if got := hostsOf(d, a); len(got) != 2 || !slices.Contains(got, rb[0]) || got[0] == got[1] {
		t.Errorf("a on %v, want kept on frozen %s and placed on another host", got, rb[0])
	}
	if st := stateOf(d, a); st.State != Placed {
		t.Errorf("a: %v %q, want placed", st.State, st.Why)
	}
	if got := hostsOf(d, b); !reflect.DeepEqual(got, rb[1:2]) {
		t.Errorf("b on %v, want %v (its first candidate %s is frozen)", got, rb[1:2], rb[0])
	}
	found := false
	for _, p := range d.Problems {
		found = found || (p.Kind == HostFrozen && p.Host == rb[0])
	}
	if !found {
		t.Errorf("problems %+v lack HostFrozen for %s", d.Problems, rb[0])
	}

	// The host reports again, with both copies of a loaded: a is back to one.
	var res []Resident
	for _, h := range hostsOf(d, a) {
		res = append(res, Resident{Host: h, Key: a, Bytes: 10 * mb})
	}
	d2 := mustDecide(t, Input{Now: t0.Add(2 * time.Hour), Config: cfg1(), Hosts: mkHosts(3, 100*mb), Previous: &d.Assignment,
		Catalog: []Version{{Key: a, ObjectBytes: 10 * mb}, {Key: b, ObjectBytes: 10 * mb}}, Resident: res,
		Demand: map[Key]Demand{a: {Rate: 1, LastUsed: t0}, b: {Rate: 1, LastUsed: t0}}})
	if st := stateOf(d2, a); st.State != Placed || len(st.Hosts) != 1 || len(st.Draining) != 0 {
		t.Errorf("a after the host reported again: %v on %v (draining %v), want placed on one host", st.State, st.Hosts, st.Draining)
	}
}

// TestDecideShrunkCapacity: when reported sizes grow past a host's capacity,
// the lowest-priority copies go first and say why; pinned ones stay.
func TestDecideShrunkCapacity(t *testing.T) {
	cat := mkCatalog(3, 10*mb)
	prev := &Assignment{Hosts: map[string]HostAssignment{"host-00": {Entries: []Entry{
		{Key: cat[0].Key, Bytes: 10 * mb, Since: t0}, {Key: cat[1].Key, Bytes: 10 * mb, Since: t0}, {Key: cat[2].Key, Bytes: 10 * mb, Since: t0},
	}}}}
	var res []Resident
	for _, v := range cat {
		res = append(res, Resident{Host: "host-00", Key: v.Key, Bytes: 15 * mb})
	}
	d := mustDecide(t, Input{Now: t0.Add(time.Hour), Config: cfg1(), Hosts: mkHosts(1, 30*mb), Catalog: cat, Previous: prev, Resident: res,
		Required: []Requirement{{Key: cat[2].Key, Pinned: true}},
		Demand:   map[Key]Demand{cat[0].Key: {LastUsed: t0.Add(2 * time.Minute)}, cat[1].Key: {LastUsed: t0.Add(time.Minute)}}})
	if got := keysOf(d.Assignment.Hosts["host-00"].Entries); !reflect.DeepEqual(got, []Key{cat[0].Key, cat[2].Key}) {
		t.Errorf("host keeps %v, want the pinned one and the most recently used", got)
	}
	if st := stateOf(d, cat[1].Key); st.State != Pending || !strings.Contains(st.Why, "no longer fits") {
		t.Errorf("%s: %v %q", cat[1].Key, st.State, st.Why)
	}
}
