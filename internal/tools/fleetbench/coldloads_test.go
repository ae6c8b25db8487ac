package main

import (
	"strings"
	"testing"

	"github.com/tfgate/tfgate/loadtest/fleet"
)

const simLog = `time=2026-12-05T05:10:33.000Z level=INFO msg="approving load for servable version" model=a version=1
time=2026-12-05T05:10:33.000Z level=INFO msg="loading servable version" model=a version=1
time=2026-12-05T05:10:33.100Z level=INFO msg="approving load for servable version" model=b version=1
time=2026-12-05T05:10:33.500Z level=INFO msg="successfully loaded servable version" model=a version=1
time=2026-12-05T05:10:33.600Z level=INFO msg="loading servable version" model=b version=1
time=2026-12-05T05:10:34.600Z level=INFO msg="successfully loaded servable version" model=b version=1
time=2026-12-05T05:10:35.000Z level=INFO msg="approving load for servable version" model=c version=1
time=2026-12-05T05:10:35.000Z level=INFO msg="some other line" model=c version=1
`

func TestParseSimLoadsAndMatch(t *testing.T) {
	loads := map[string][]simLoad{}
	if err := parseSimLoads(strings.NewReader(simLog), loads); err != nil {
		t.Fatal(err)
	}
	if len(loads) != 2 || len(loads["a"]) != 1 || len(loads["b"]) != 1 {
		t.Fatalf("loads %v: want a and b (c never finished)", loads)
	}
	a, b := loads["a"][0], loads["b"][0]
	if !a.threadFree() || b.threadFree() || a.loaded-a.started != 500 || b.started-b.approved != 500 {
		t.Fatalf("a %+v (want thread free, 500 ms load), b %+v (want 500 ms queued)", a, b)
	}
	t0 := a.approved - 200 // the trace starts 200 ms before a's load is approved
	trace := []fleet.Request{
		{AtMs: 0, Model: "a", Code: "OK", LatencyMs: 900},   // held for a: served 400 ms after its load
		{AtMs: 50, Model: "b", Code: "OK", LatencyMs: 1700}, // held for b, whose load queued
		{AtMs: 100, Model: "a", Code: "OK", LatencyMs: 60},  // slow but a was not loading
		{AtMs: 0, Model: "a", Code: "OK", LatencyMs: 10},    // warm
		{AtMs: 0, Model: "a", Code: "Unavailable", LatencyMs: 5000},
		{AtMs: 0, Model: "a", Code: "OK", LatencyMs: 900, Warmup: true},
	}
	c := matchColdLoads(trace, t0, loads, map[string]int64{"a": 400e6, "b": 800e6}, 800e6)
	if c.Matched != 2 || c.ThreadFree != 1 {
		t.Fatalf("matched %d, thread free %d; want 2 and 1: %+v", c.Matched, c.ThreadFree, c)
	}
	near := func(got, want float64) bool { return got > want-1e-6 && got < want+1e-6 }
	if !near(c.ExcessFreeP99, 0.4) || !near(c.ExcessQueuedP99, 0.7) || !near(c.ToApprovedP99, 0.2) ||
		!near(c.LoadP99, 0.5) || !near(c.ToServedP99, 0.2) {
		t.Errorf("%+v: want excess free 0.4 s, queued 0.7 s; steps 0.2 / 0.5 / 0.2 s", c)
	}
}

func TestParseSimLoadsRejectsBadLines(t *testing.T) {
	for _, in := range []string{
		`time=yesterday level=INFO msg="loading servable version" model=a version=1`,
		`time=2026-12-05T05:10:33.000Z level=INFO msg="loading servable version"`,
	} {
		if err := parseSimLoads(strings.NewReader(in), map[string][]simLoad{}); err == nil {
			t.Errorf("parseSimLoads(%q) = nil, want an error", in)
		}
	}
}
