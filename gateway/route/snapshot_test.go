package route

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// fakeState: versions in ready are routable; others lack hosts.
type fakeState struct {
	ready  map[int64]bool
	noSpec map[int64]bool
}

func (f fakeState) SpecStatus(model string, v int64) error {
	if f.noSpec[v] {
		return errors.New("spec failed to load")
	}
	return nil
}

func (f fakeState) Versions(model string) []int64 { return []int64{1, 2, 3, 4} }

func (f fakeState) AvailableHosts(model string, v int64) []string {
	if f.ready[v] {
		return []string{"h1:8500"}
	}
	return nil
}

func ready(vs ...int64) fakeState {
	f := fakeState{ready: map[int64]bool{}, noSpec: map[int64]bool{}}
	for _, v := range vs {
		f.ready[v] = true
	}
	return f
}

func mustParse(t testing.TB, y string) *Config {
	t.Helper()
	c, err := Parse("test.yaml", []byte(y), nil)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c
}

func expConfig(weights ...float64) string {
	var b strings.Builder
	b.WriteString("defaults: {pools: [gpu]}\nmodels:\n  m:\n    default: stable\n    labels: {stable: 1, canary: 2}\n    experiment:\n      name: e\n      arms:\n")
	for i, w := range weights {
		fmt.Fprintf(&b, "        - {name: arm%d, version: %d, weight: %v}\n", i+1, i+1, w)
	}
	return b.String()
}

func TestResolveTargets(t *testing.T) {
	y := "defaults: {pools: [gpu]}\nmodels:\n" +
		"  labeled: {default: stable, labels: {stable: 1, canary: 2, broken: 3}}\n" +
		"  versioned: {default: \"2\"}\n" +
		"  bare: {labels: {stable: 1}}\n" +
		"  down: {default: broken, labels: {broken: 3}}\n" +
		"  exp: {default: \"1\", experiment: {name: e, arms: [{name: a, version: 3, weight: 1}]}}\n" +
		"  expdown: {experiment: {name: e, arms: [{name: a, version: 3, weight: 1}]}}\n"
	s := Build(mustParse(t, y), ready(1, 2), 1, BuildOptions{})
	tests := []struct {
		name    string
		model   string
		target  Target
		want    Route
		wantErr error
		msg     string
	}{
		{"explicit", "labeled", Target{Version: 9}, Route{Version: 9, Kind: KindVersion}, nil, ""},
		{"label", "labeled", Target{Label: "canary"}, Route{Version: 2, Kind: KindLabel, Label: "canary"}, nil, ""},
		{"default label", "labeled", Target{}, Route{Version: 1, Kind: KindDefault, Label: "stable"}, nil, ""},
		{"default version", "versioned", Target{}, Route{Version: 2, Kind: KindDefault}, nil, ""},
		{"unknown label", "labeled", Target{Label: "nope"}, Route{}, ErrUnknownLabel, `labels defined: "broken", "canary", "stable"`},
		{"label not routable", "labeled", Target{Label: "broken"}, Route{}, ErrNotRoutable, `label "broken" -> version 3: no routable version: no host in pools [gpu] reports it AVAILABLE`},
		{"no default", "bare", Target{}, Route{}, ErrNoDefaultRoute, "name a version or one of its labels"},
		{"default not routable", "down", Target{}, Route{}, ErrNotRoutable, `default label "broken" -> version 3`},
		{"experiment down falls back to default", "exp", Target{}, Route{Version: 1, Kind: KindDefault}, nil, ""},
		{"experiment down no default", "expdown", Target{}, Route{}, ErrNotRoutable, `arm "a" (version 3): no host`},
		{"unknown model", "nope", Target{}, Route{}, ErrUnknownModel, "not in the routing config"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := s.Resolve(tc.model, tc.target, "")
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Resolve(%q, %+v) error = %v, want %v", tc.model, tc.target, err, tc.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("Resolve(%q, %+v) error = %q, want it to contain %q", tc.model, tc.target, err, tc.msg)
			}
			if got != tc.want {
				t.Errorf("Resolve(%q, %+v) = %+v, want %+v", tc.model, tc.target, got, tc.want)
			}
		})
	}
}

func TestKeylessSplit(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	s := Build(mustParse(t, expConfig(90, 10)), ready(1, 2), 1, BuildOptions{Rand: r.Uint64})
	const n = 20000
	counts := map[string]int{}
	for i := 0; i < n; i++ {
		rt, _, err := s.Resolve("m", Target{}, "")
		if err != nil {
			t.Fatal(err)
		}
		if want := map[string]int64{"arm1": 1, "arm2": 2}[rt.Arm]; rt.Version != want {
			t.Fatalf("arm %q served version %d, want %d", rt.Arm, rt.Version, want)
		}
		counts[rt.Arm]++
	}
	got := float64(counts["arm1"]) / n * 100
	if math.Abs(got-90) > 1 {
		t.Errorf("arm1 got %.2f%% of %d keyless requests, want 90 +- 1", got, n)
	}
}

func TestStickyAndStable(t *testing.T) {
	const n = 10000
	before := Build(mustParse(t, expConfig(50, 50)), ready(1, 2), 1, BuildOptions{})
	after := Build(mustParse(t, expConfig(60, 40)), ready(1, 2), 2, BuildOptions{})
	moved, arm1 := 0, 0
	for i := 0; i < n; i++ {
		key := fmt.Sprintf("customer-%d", i)
		a, _, _ := before.Resolve("m", Target{}, key)
		for j := 0; j < 3; j++ {
			again, _, _ := before.Resolve("m", Target{}, key)
			if again != a {
				t.Fatalf("key %q got %+v then %+v", key, a, again)
			}
		}
		b, _, _ := after.Resolve("m", Target{}, key)
		if a.Arm != b.Arm {
			moved++
			if a.Arm != "arm2" || b.Arm != "arm1" {
				t.Errorf("key %q moved %s -> %s; only arm2 -> arm1 moves are needed", key, a.Arm, b.Arm)
			}
		}
		if b.Arm == "arm1" {
			arm1++
		}
	}
	if pct := float64(moved) / n * 100; pct < 9 || pct > 11 {
		t.Errorf("50/50 -> 60/40 moved %.2f%% of %d keys, want 9..11%%", pct, n)
	}
	if pct := float64(arm1) / n * 100; pct < 58 || pct > 62 {
		t.Errorf("60/40: arm1 has %.2f%% of keys, want ~60", pct)
	}
}

func TestUnroutableArmShareMoves(t *testing.T) {
	const n = 10000
	all := Build(mustParse(t, expConfig(34, 33, 33)), ready(1, 2, 3), 1, BuildOptions{})
	st := ready(1, 2)
	st.noSpec[3] = true
	down := Build(mustParse(t, expConfig(34, 33, 33)), st, 2, BuildOptions{})
	got := map[string]int{}
	for i := 0; i < n; i++ {
		key := fmt.Sprintf("k%d", i)
		a, _, _ := all.Resolve("m", Target{}, key)
		b, _, err := down.Resolve("m", Target{}, key)
		if err != nil {
			t.Fatal(err)
		}
		if b.Arm == "arm3" {
			t.Fatalf("key %q routed to arm3, whose version has no spec", key)
		}
		if a.Arm != "arm3" && a.Arm != b.Arm {
			t.Errorf("key %q on healthy %s moved to %s when arm3 went down", key, a.Arm, b.Arm)
		}
		got[b.Arm]++
	}
	for _, arm := range []string{"arm1", "arm2"} {
		if pct := float64(got[arm]) / n * 100; pct < 47 || pct > 53 {
			t.Errorf("%s has %.1f%% with arm3 down, want ~50", arm, pct)
		}
	}
	arms := down.models["m"].Arms()
	if arms[2].Routable || !strings.Contains(arms[2].Reason, "spec failed to load") || arms[2].EffectiveShare != 0 {
		t.Errorf("arm3 status = %+v, want not routable with the spec reason and no share", arms[2])
	}
	if s := arms[0].EffectiveShare + arms[1].EffectiveShare; math.Abs(s-1) > 1e-9 {
		t.Errorf("effective shares of live arms sum to %v, want 1", s)
	}
}

func TestSaltsDoNotCorrelate(t *testing.T) {
	const n = 10000
	same := 0
	for i := 0; i < n; i++ {
		key := fmt.Sprintf("user-%d", i)
		if (Bucket("m/e1", key) < Buckets/2) == (Bucket("m/e2", key) < Buckets/2) {
			same++
		}
	}
	if pct := float64(same) / n * 100; pct < 47 || pct > 53 {
		t.Errorf("two 50/50 experiments agree on %.1f%% of keys, want ~50 (independent)", pct)
	}
}

func TestResolveDoesNotAllocate(t *testing.T) {
	s := Build(mustParse(t, expConfig(50, 50)), ready(1, 2), 1, BuildOptions{})
	cases := map[string]func(){
		"sticky":   func() { s.Resolve("m", Target{}, "customer-42") },
		"keyless":  func() { s.Resolve("m", Target{}, "") },
		"label":    func() { s.Resolve("m", Target{Label: "canary"}, "") },
		"explicit": func() { s.Resolve("m", Target{Version: 7}, "") },
	}
	for name, f := range cases {
		if a := testing.AllocsPerRun(100, f); a != 0 {
			t.Errorf("%s resolution allocates %v times, want 0", name, a)
		}
	}
}

func TestVersionsListsKnownVersions(t *testing.T) {
	s := Build(mustParse(t, "defaults: {pools: [p]}\nmodels:\n  m: {labels: {stable: 7}}\n"), ready(1, 7), 1, BuildOptions{})
	m, _ := s.Model("m")
	var got []int64
	for _, v := range m.Versions {
		got = append(got, v.Version)
		if wantRoutable := v.Version == 1 || v.Version == 7; v.Routable != wantRoutable {
			t.Errorf("version %d routable = %v, want %v (%s)", v.Version, v.Routable, wantRoutable, v.Reason)
		}
	}
	if fmt.Sprint(got) != "[1 2 3 4 7]" {
		t.Errorf("versions = %v, want the state's 1-4 plus the label's 7, ascending", got)
	}
}

func TestAnyRoutable(t *testing.T) {
	cfg := mustParse(t, expConfig(50, 50))
	if ok, n := Build(cfg, ready(), 1, BuildOptions{}).AnyRoutable(); ok || n != 1 {
		t.Errorf("no version ready: AnyRoutable() = %v, %d; want false, 1 model", ok, n)
	}
	if ok, n := Build(cfg, ready(2), 1, BuildOptions{}).AnyRoutable(); !ok || n != 1 {
		t.Errorf("version 2 ready: AnyRoutable() = %v, %d; want true, 1 model", ok, n)
	}
}
