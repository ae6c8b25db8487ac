package hosts

import (
	"strings"
	"testing"
	"time"
)

func TestPick(t *testing.T) {
	now := time.Unix(1000, 0)
	mk := func(addr string, outstanding int64, ejected bool, models map[string][]int64) *host {
		h := &host{addr: addr, avail: models}
		h.outstanding.Store(outstanding)
		if ejected {
			h.ejectedUntil.Store(now.Add(time.Second).UnixNano())
		}
		return h
	}
	type want struct {
		addr string
		any  bool
	}
	for _, tc := range []struct {
		name    string
		hosts   []*host
		members map[string][]string
		pools   []string
		version int64
		tried   []string
		rnd     []int // successive Rand results
		want    want
	}{
		{name: "less loaded of two",
			hosts:   []*host{mk("a", 5, false, map[string][]int64{"m": {1}}), mk("b", 1, false, map[string][]int64{"m": {1}}), mk("c", 9, false, map[string][]int64{"m": {1}})},
			members: map[string][]string{"p": {"a", "b", "c"}}, pools: []string{"p"}, version: 1,
			rnd: []int{0, 0}, want: want{"b", true}}, // i=0 (a), j=0 -> 1 (b)
		{name: "first preferred pool wins",
			hosts:   []*host{mk("g", 100, false, map[string][]int64{"m": {1}}), mk("c", 0, false, map[string][]int64{"m": {1}})},
			members: map[string][]string{"gpu": {"g"}, "cpu": {"c"}}, pools: []string{"gpu", "cpu"}, version: 1,
			want: want{"g", true}},
		{name: "fallback when preferred lacks version",
			hosts:   []*host{mk("g", 0, false, map[string][]int64{"m": {1}}), mk("c", 0, false, map[string][]int64{"m": {1, 2}})},
			members: map[string][]string{"gpu": {"g"}, "cpu": {"c"}}, pools: []string{"gpu", "cpu"}, version: 2,
			want: want{"c", true}},
		{name: "fallback when preferred ejected",
			hosts:   []*host{mk("g", 0, true, map[string][]int64{"m": {1}}), mk("c", 0, false, map[string][]int64{"m": {1}})},
			members: map[string][]string{"gpu": {"g"}, "cpu": {"c"}}, pools: []string{"gpu", "cpu"}, version: 1,
			want: want{"c", true}},
		{name: "tried host skipped",
			hosts:   []*host{mk("a", 0, false, map[string][]int64{"m": {1}}), mk("b", 9, false, map[string][]int64{"m": {1}})},
			members: map[string][]string{"p": {"a", "b"}}, pools: []string{"p"}, version: 1, tried: []string{"a"},
			want: want{"b", true}},
		{name: "all ejected: panic routing",
			hosts:   []*host{mk("a", 0, true, map[string][]int64{"m": {1}})},
			members: map[string][]string{"p": {"a"}}, pools: []string{"p"}, version: 1,
			want: want{"a", true}},
		{name: "version nowhere",
			hosts:   []*host{mk("a", 0, false, map[string][]int64{"m": {1}})},
			members: map[string][]string{"p": {"a"}}, pools: []string{"p"}, version: 3,
			want: want{"", false}},
		{name: "available only outside the pools searched",
			hosts:   []*host{mk("a", 0, false, map[string][]int64{"m": {1}})},
			members: map[string][]string{"p": {"a"}, "q": {}}, pools: []string{"q"}, version: 1,
			want: want{"", false}},
		{name: "everything tried",
			hosts:   []*host{mk("a", 0, false, map[string][]int64{"m": {1}})},
			members: map[string][]string{"p": {"a"}}, pools: []string{"p"}, version: 1, tried: []string{"a"},
			want: want{"", true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			byAddr := map[string]*host{}
			for _, h := range tc.hosts {
				byAddr[h.addr] = h
			}
			r := buildReadiness(tc.members, byAddr, now)
			var tried []*host
			for _, a := range tc.tried {
				tried = append(tried, byAddr[a])
			}
			rnd := tc.rnd
			randN := func(n int) int {
				if len(rnd) == 0 {
					return 0
				}
				v := rnd[0] % n
				rnd = rnd[1:]
				return v
			}
			h, any := r.pick(tc.pools, versionKey{"m", tc.version}, tried, now.UnixNano(), randN)
			got := want{any: any}
			if h != nil {
				got.addr = h.addr
			}
			if got != tc.want {
				t.Errorf("pick(pools %v, m v%d, tried %v) = %+v, want %+v", tc.pools, tc.version, tc.tried, got, tc.want)
			}
		})
	}
}

func TestEjectionBackoff(t *testing.T) {
	cfg := EjectionConfig{ConsecutiveFailures: 3, BaseDuration: time.Second, MaxDuration: 3 * time.Second}
	h := &host{}
	now := time.Unix(0, 0)
	var got []time.Duration
	step := func() { // fail until ejected, then jump past the ejection
		for {
			d := h.failed(cfg, now)
			if d > 0 {
				got = append(got, d)
				now = now.Add(d)
				return
			}
		}
	}
	step()
	if h.failures != 0 || h.ejections != 1 {
		t.Fatalf("after first ejection failures=%d ejections=%d", h.failures, h.ejections)
	}
	step()
	step()
	step()
	want := []time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 3 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("ejection durations = %v, want %v", got, want)
		}
	}
	h.succeeded()
	if d := h.failed(cfg, now); d != 0 {
		t.Errorf("one failure after a success ejected for %v, want no ejection", d)
	}
}

// TestReadinessUnrouted: a copy placement no longer assigns (unrouted) is left
// out of routing, Hosts and Available, and Explain names it as draining; other
// hosts' copies are unaffected.
func TestReadinessUnrouted(t *testing.T) {
	a := &host{addr: "a", avail: map[string][]int64{"m": {1, 2}}}
	b := &host{addr: "b", avail: map[string][]int64{"m": {1}}}
	members := map[string][]string{"p": {"a", "b"}}
	byAddr := map[string]*host{"a": a, "b": b}
	r := buildReadinessPlaced(members, byAddr, time.Unix(1000, 0), func(addr string, k versionKey) bool {
		return addr == "a" // a keeps nothing
	})
	if got := r.Hosts("m", 1); len(got) != 1 || got[0] != "b" {
		t.Errorf("Hosts(m, 1) = %v, want [b]", got)
	}
	if r.Available("m", 2, []string{"p"}) {
		t.Error("m@2, only on a (unassigned), is Available")
	}
	for range 10 {
		if h, _ := r.pick([]string{"p"}, versionKey{"m", 1}, nil, 0, func(n int) int { return n - 1 }); h != b {
			t.Fatalf("picked %v for m@1, want b", h)
		}
	}
	if h, any := r.pick([]string{"p"}, versionKey{"m", 2}, nil, 0, func(int) int { return 0 }); h != nil || any {
		t.Errorf("pick(m@2) = %v, %v; want none", h, any)
	}
	want := "AVAILABLE but no longer assigned by placement (draining before the unload): a"
	if got := r.Explain("m", 2, []string{"p"}); !strings.Contains(got, want) {
		t.Errorf("Explain(m@2) = %q, want it to contain %q", got, want)
	}
	if r.Entries() != 1 {
		t.Errorf("Entries() = %d, want 1", r.Entries())
	}
}
