package fleet

import (
	"math"
	"slices"
	"strings"
	"testing"
)

func trace(warmup []string, measured ...string) []Request {
	var out []Request
	for _, m := range warmup {
		out = append(out, Request{Seq: int64(len(out)), Warmup: true, Model: m, Version: 1, Code: "OK"})
	}
	for _, m := range measured {
		out = append(out, Request{Seq: int64(len(out)), Model: m, Version: 1, Code: "OK"})
	}
	return out
}

func sorted(a Assignment) [][]string {
	out := make([][]string, len(a.Hosts))
	for i, h := range a.Hosts {
		out[i] = slices.Sorted(slices.Values(h))
	}
	return out
}

func TestOracle(t *testing.T) {
	tests := []struct {
		name     string
		catalog  []Model
		counts   map[string]int64
		capacity []int64
		want     [][]string
	}{
		{
			name:     "requests per byte, not requests",
			catalog:  []Model{{"big", 10}, {"small1", 2}, {"small2", 2}},
			counts:   map[string]int64{"big": 6, "small1": 4, "small2": 4}, // 0.6/B vs 2/B
			capacity: []int64{4},
			want:     [][]string{{"small1", "small2"}},
		},
		{
			name:     "a model that fits nowhere is skipped, later ones still placed",
			catalog:  []Model{{"a", 3}, {"b", 3}, {"c", 1}},
			counts:   map[string]int64{"a": 30, "b": 27, "c": 1},
			capacity: []int64{4},
			want:     [][]string{{"a", "c"}},
		},
		{
			name:     "per-host capacity: the most room first, no splitting",
			catalog:  []Model{{"a", 3}, {"b", 3}, {"c", 3}},
			counts:   map[string]int64{"a": 3, "b": 2, "c": 1},
			capacity: []int64{4, 4}, // 8 bytes in all, but 3+3 does not fit one host
			want:     [][]string{{"a"}, {"b"}},
		},
		{
			name:     "unrequested models take no room",
			catalog:  []Model{{"a", 1}, {"cold", 1}},
			counts:   map[string]int64{"a": 1},
			capacity: []int64{10},
			want:     [][]string{{"a"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := Oracle(tc.catalog, tc.counts, tc.capacity)
			if got := sorted(a); !slices.EqualFunc(got, tc.want, slices.Equal) {
				t.Errorf("Oracle = %v, want %v", got, tc.want)
			}
			for h, u := range a.Used {
				if u > tc.capacity[h] {
					t.Errorf("host %d holds %d bytes, capacity %d", h, u, tc.capacity[h])
				}
			}
		})
	}
}

func TestRandomFillsWithinCapacity(t *testing.T) {
	cat, err := Catalog(CatalogSpec{N: 2000, Prefix: "m", MedianBytes: 50, Sigma: 1, MinBytes: 5, MaxBytes: 1200, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	capacity := []int64{3000, 3000, 4000}
	a := Random(cat, capacity, 9)
	for h, u := range a.Used {
		// Random stops only when no remaining model fits: at most the largest
		// model's size short of full.
		if u > capacity[h] || u < capacity[h]-1200 {
			t.Errorf("host %d: %d bytes of %d", h, u, capacity[h])
		}
	}
	if b := Random(cat, capacity, 9); !slices.EqualFunc(a.Hosts, b.Hosts, slices.Equal) {
		t.Error("Random is not deterministic in its seed")
	}
	seen := map[string]bool{}
	for _, h := range a.Hosts {
		for _, m := range h {
			if seen[m] {
				t.Errorf("%s placed twice", m)
			}
			seen[m] = true
		}
	}
}

func TestCatalogSizes(t *testing.T) {
	spec := CatalogSpec{N: 20000, Prefix: "cust-", MedianBytes: 60e6, Sigma: 1.2, MinBytes: 5e6, MaxBytes: 1200e6, Seed: 1}
	c, err := Catalog(spec)
	if err != nil {
		t.Fatal(err)
	}
	sizes := make([]int64, len(c))
	for i, m := range c {
		sizes[i] = m.Bytes
		if m.Bytes < spec.MinBytes || m.Bytes > spec.MaxBytes {
			t.Fatalf("%s: %d bytes outside [%d, %d]", m.Name, m.Bytes, spec.MinBytes, spec.MaxBytes)
		}
	}
	slices.Sort(sizes)
	if med := float64(sizes[len(sizes)/2]); math.Abs(med/spec.MedianBytes-1) > 0.05 {
		t.Errorf("median %v, want about %v", med, spec.MedianBytes)
	}
	if c[7].Name != "cust-7" {
		t.Errorf("model 7 is %q", c[7].Name)
	}
	if _, err := Catalog(CatalogSpec{N: 1, MinBytes: 10, MaxBytes: 5, MedianBytes: 1}); err == nil {
		t.Error("min above max accepted")
	}
}

func TestWarmShareAndFirstTouches(t *testing.T) {
	tr := trace([]string{"a", "b"}, "a", "c", "a", "d", "c")
	if s := WarmShare(map[string]bool{"a": true, "c": true}, tr); s != (Share{Warm: 4, Total: 5}) || s.Fraction() != 0.8 {
		t.Errorf("WarmShare = %+v", s)
	}
	// c and d are first seen after warm-up; a was seen in it.
	if n := FirstTouches(tr); n != 2 {
		t.Errorf("FirstTouches = %d, want 2", n)
	}
	if c := Counts(tr); c["a"] != 2 || c["b"] != 0 || c["c"] != 2 {
		t.Errorf("Counts = %v", c)
	}
}

func TestReadTrace(t *testing.T) {
	good := "seq\tat_ms\twarmup\tmodel\tversion\tcode\tlatency_ms\n" +
		"1\t10.5\t0\tm1\t1\tOK\t2.5\n" +
		"0\t0.0\t1\tm0\t1\tUnavailable\t900\n"
	got, err := ReadTrace(strings.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	want := []Request{{Seq: 0, Warmup: true, Model: "m0", Version: 1, Code: "Unavailable", LatencyMs: 900},
		{Seq: 1, AtMs: 10.5, Model: "m1", Version: 1, Code: "OK", LatencyMs: 2.5}}
	if !slices.Equal(got, want) {
		t.Errorf("ReadTrace = %+v, want %+v (sorted by seq)", got, want)
	}
	for name, in := range map[string]string{
		"empty":        "",
		"no header":    "0\t0\t0\tm\t1\tOK\t1\n",
		"short line":   "seq\n0\t0\t0\tm\t1\n",
		"bad warmup":   "seq\n0\t0\tyes\tm\t1\tOK\t1\n",
		"repeated seq": "seq\n0\t0\t0\tm\t1\tOK\t1\n0\t0\t0\tm\t1\tOK\t1\n",
		"NaN latency":  "seq\n0\t0\t0\tm\t1\tOK\tNaN\n",
		"long line":    "seq\n" + strings.Repeat("x", MaxTraceLine+1) + "\n",
	} {
		if _, err := ReadTrace(strings.NewReader(in)); err == nil {
			t.Errorf("%s: ReadTrace accepted %.40q", name, in)
		}
	}
}

func FuzzReadTrace(f *testing.F) {
	f.Add("seq\tat_ms\twarmup\tmodel\tversion\tcode\tlatency_ms\n0\t0.0\t1\tm0\t1\tOK\t1.5\n")
	f.Add("seq\n5\t1\t0\tx\t-1\t\t0\n5\t1\t0\tx\t1\tOK\t0\n")
	f.Fuzz(func(t *testing.T, in string) {
		tr, err := ReadTrace(strings.NewReader(in))
		if err != nil {
			return
		}
		for i, q := range tr {
			if q.Model == "" || (i > 0 && tr[i-1].Seq >= q.Seq) {
				t.Fatalf("accepted trace has request %+v at %d (empty model or out of order)", q, i)
			}
		}
	})
}
