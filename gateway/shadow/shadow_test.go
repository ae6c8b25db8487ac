package shadow

import (
	"math"
	"testing"
	"time"

	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

func scores(s ...float32) *tfgatev1.Prediction {
	p := &tfgatev1.Prediction{}
	for i, v := range s {
		p.Scores = append(p.Scores, &tfgatev1.ClassScore{Index: int32(i), Score: v})
	}
	return p
}

func TestCompare(t *testing.T) {
	for _, tc := range []struct {
		name            string
		primary, shadow []*tfgatev1.Prediction
		want            Diff
	}{
		{name: "agree", primary: []*tfgatev1.Prediction{scores(0.1, 0.7, 0.2)}, shadow: []*tfgatev1.Prediction{scores(0.2, 0.6, 0.2)},
			want: Diff{Instances: 1, Top1: 1, Agree: 1, Values: 3, SumAbs: 0.2, MaxAbs: 0.1}},
		{name: "disagree", primary: []*tfgatev1.Prediction{scores(0.6, 0.4), scores(0.5, 0.5)}, shadow: []*tfgatev1.Prediction{scores(0.4, 0.6), scores(0.5, 0.5)},
			want: Diff{Instances: 2, Top1: 2, Agree: 1, Values: 4, SumAbs: 0.4, MaxAbs: 0.2}},
		{name: "regression", primary: []*tfgatev1.Prediction{{Values: []float64{1, 2}}}, shadow: []*tfgatev1.Prediction{{Values: []float64{1.5, 2}}},
			want: Diff{Instances: 1, Values: 2, SumAbs: 0.5, MaxAbs: 0.5}},
		{name: "embedding", primary: []*tfgatev1.Prediction{{Embedding: []float32{1, 0}}}, shadow: []*tfgatev1.Prediction{{Embedding: []float32{0, 0}}},
			want: Diff{Instances: 1, Values: 2, SumAbs: 1, MaxAbs: 1}},
		{name: "shapes differ", primary: []*tfgatev1.Prediction{scores(1, 0), scores(1)}, shadow: []*tfgatev1.Prediction{scores(1, 0, 0)},
			want: Diff{Instances: 1, Mismatched: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Compare(tc.primary, tc.shadow)
			if got.Instances != tc.want.Instances || got.Top1 != tc.want.Top1 || got.Agree != tc.want.Agree || got.Values != tc.want.Values ||
				got.Mismatched != tc.want.Mismatched || math.Abs(got.SumAbs-tc.want.SumAbs) > 1e-6 || math.Abs(got.MaxAbs-tc.want.MaxAbs) > 1e-6 {
				t.Errorf("Compare = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestTracker(t *testing.T) {
	tr, err := NewTracker(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	k := Key{Model: "m", Primary: 1, Shadow: 2}
	tr.Compared(k, Diff{Instances: 2, Top1: 2, Agree: 1, Values: 4, SumAbs: 2, MaxAbs: 1}, time.Millisecond)
	tr.Compared(k, Diff{Instances: 2, Top1: 2, Agree: 2, Values: 4, SumAbs: 0, MaxAbs: 0.5}, 3*time.Millisecond)
	tr.Shed(k)
	tr.Failed(k, 2*time.Millisecond)
	tr.Compared(Key{Model: "other", Primary: 1, Shadow: 2}, Diff{}, 0)
	st := tr.Stats("m")
	if len(st) != 1 {
		t.Fatalf("Stats(m) = %+v", st)
	}
	s := st[0]
	if s.Requests != 2 || s.Shed != 1 || s.Failed != 1 || s.Agreement() != 0.75 || s.MeanAbs() != 0.25 || s.MaxAbs != 1 || s.Latency != 6*time.Millisecond {
		t.Errorf("stats %+v (agreement %v, mean %v)", s, s.Agreement(), s.MeanAbs())
	}
	if n := len(tr.Stats("")); n != 2 {
		t.Errorf("Stats(\"\") has %d comparisons, want 2", n)
	}
}
