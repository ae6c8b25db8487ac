package placement

import (
	"fmt"
	"math"
	"testing"
)

func hostIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("host-%02d", i)
	}
	return ids
}

// TestRankRemoveOneMovesOneOverN: removing one of N hosts changes the first
// candidate only of the versions that host was first for (about 1/N).
func TestRankRemoveOneMovesOneOverN(t *testing.T) {
	const versions = 20000
	for _, n := range []int{4, 10, 20} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			ids := hostIDs(n)
			fewer := ids[:n-1]
			moved, wasOnRemoved := 0, 0
			for i := range versions {
				k := Key{Model: fmt.Sprintf("customer-%d", i), Version: 1}
				before := Rank(k, ids, nil)[0]
				after := Rank(k, fewer, nil)[0]
				if before != after {
					moved++
					if before != ids[n-1] {
						t.Fatalf("%s moved from %s to %s, but %s was not removed", k, before, after, before)
					}
				}
				if before == ids[n-1] {
					wasOnRemoved++
				}
			}
			frac := float64(moved) / versions
			t.Logf("N=%d: removing one host moved %.4f of first candidates (1/N = %.4f)", n, frac, 1/float64(n))
			if moved != wasOnRemoved {
				t.Errorf("moved %d, want exactly the %d that ranked the removed host first", moved, wasOnRemoved)
			}
			if math.Abs(frac-1/float64(n)) > 0.25/float64(n) {
				t.Errorf("moved fraction %.4f, want within 25%% of 1/N = %.4f", frac, 1/float64(n))
			}
		})
	}
}

// TestRankWeighted: a host with twice the weight is first candidate about twice as often.
func TestRankWeighted(t *testing.T) {
	ids := []string{"a", "b", "c"}
	weights := []float64{1, 2, 1}
	count := map[string]int{}
	const versions = 40000
	for i := range versions {
		count[Rank(Key{Model: fmt.Sprintf("m%d", i), Version: 3}, ids, weights)[0]]++
	}
	want := map[string]float64{"a": 0.25, "b": 0.5, "c": 0.25}
	for id, w := range want {
		got := float64(count[id]) / versions
		if math.Abs(got-w) > 0.02 {
			t.Errorf("host %s first for %.3f of versions, want %.2f (weights %v)", id, got, w, weights)
		}
	}
}

// TestRankStable: the ranking is a fixed function of host IDs and key, whatever
// order hosts are given in.
func TestRankStable(t *testing.T) {
	k := Key{Model: "acme", Version: 7}
	a := Rank(k, []string{"h1", "h2", "h3", "h4"}, nil)
	b := Rank(k, []string{"h4", "h3", "h1", "h2"}, nil)
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatalf("rank depends on input order: %v vs %v", a, b)
	}
}
