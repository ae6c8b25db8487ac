package loadtest

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/tfgate/tfgate/gateway/exposure"
	"github.com/tfgate/tfgate/loadtest/stats"
)

// writeLog writes n experiment records through the real exposure writer; arm
// says which arm record i went to.
func writeLog(t *testing.T, n int, start time.Time, hash bool, arm func(i int) string) []byte {
	t.Helper()
	var out bytes.Buffer
	l, err := exposure.New(exposure.Config{Path: "mem", Buffer: n + 1, HashKeys: hash, HashSecret: []byte("0123456789abcdef")}, exposure.Options{Output: &out})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		a := arm(i)
		v := int64(1)
		if a == "treatment" {
			v = 2
		}
		l.Expose(exposure.Record{Time: start.Add(time.Duration(i) * time.Millisecond), Model: "reviews", Experiment: "e", Arm: a, Version: v,
			Route: "experiment", Key: fmt.Sprintf("customer-%d", i), Code: codes.OK, Latency: time.Millisecond})
	}
	l.Expose(exposure.Record{Time: start, Model: "reviews", Version: 1, Route: "label", Label: "stable", Code: codes.OK})
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func TestExposureSplit(t *testing.T) {
	start := time.Date(2026, 12, 3, 7, 0, 0, 0, time.UTC)
	weights := map[string]map[string]float64{ExperimentModel("reviews", "e"): {"control": 90, "treatment": 10}}
	for _, tc := range []struct {
		name     string
		hash     bool
		arm      func(int) string
		mismatch bool
	}{
		{name: "fair 90/10", arm: func(i int) string { return map[bool]string{true: "treatment", false: "control"}[i%10 == 0] }},
		{name: "fair 90/10, hashed keys", hash: true, arm: func(i int) string { return map[bool]string{true: "treatment", false: "control"}[i%10 == 0] }},
		{name: "skewed 85/15", arm: func(i int) string { return map[bool]string{true: "treatment", false: "control"}[i%20 < 3] }, mismatch: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 5000
			rec := stats.NewRecorder()
			var read ExposureRead
			if err := ReadExposures(bytes.NewReader(writeLog(t, n, start, tc.hash, tc.arm)), rec, ExposureWindow{}, &read); err != nil {
				t.Fatal(err)
			}
			if read.Records != n+1 || !read.First.Equal(start) {
				t.Fatalf("read %+v, want %d records from %v", read, n+1, start)
			}
			s := stats.Summarize(rec, weights, read.Last.Sub(read.First))
			if len(s.Splits) != 1 || s.Splits[0].Model != "reviews/e" {
				t.Fatalf("splits %+v, want one for reviews/e", s.Splits)
			}
			sp := s.Splits[0]
			if sp.Mismatch() != tc.mismatch || len(sp.Tests) != 1 || sp.Tests[0].Unit != "keys" || sp.Tests[0].N != n {
				t.Errorf("split %+v: mismatch %v, want %v (one test over %d keys)", sp, sp.Mismatch(), tc.mismatch, n)
			}
		})
	}
}

func TestExposureWindowAndBadLines(t *testing.T) {
	start := time.Date(2026, 12, 3, 7, 0, 0, 0, time.UTC)
	log := writeLog(t, 1000, start, false, func(i int) string { return "control" })
	rec := stats.NewRecorder()
	var read ExposureRead
	w := ExposureWindow{From: start.Add(100 * time.Millisecond), To: start.Add(200 * time.Millisecond)}
	if err := ReadExposures(bytes.NewReader(log), rec, w, &read); err != nil {
		t.Fatal(err)
	}
	if read.Records != 100 || read.Outside != 901 {
		t.Errorf("window [100ms, 200ms): read %+v, want 100 in, 901 outside", read)
	}
	err := ReadExposures(strings.NewReader(string(log[:bytes.IndexByte(log, '\n')+1])+"not json\n"), stats.NewRecorder(), ExposureWindow{}, &ExposureRead{})
	if err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("a broken line: %v, want an error naming line 2", err)
	}
}
