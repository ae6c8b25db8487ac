package gateway

import (
	"context"
	"log/slog"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/tfgate/tfgate/internal/testwait"
	"github.com/tfgate/tfgate/placement"
)

func TestDemandReport(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	d := newDemand(func() time.Time { return now })
	for range 10 {
		d.record("a", 1)
	}
	now = now.Add(time.Second)
	d.record("b", 2)
	r := d.report("gw", 2*time.Second)
	if r.Gateway != "gw" || len(r.Versions) != 2 {
		t.Fatalf("report %+v, want a@1 and b@2", r)
	}
	// Most recently used first; a rate is the count decayed with time constant
	// demandTau: one interval of n requests in secs reads as n(1-e^(-secs/tau))/secs.
	step := func(prev float64, n int, secs float64) float64 {
		d := math.Exp(-secs / demandTau.Seconds())
		return prev*d + float64(n)*(1-d)/secs
	}
	if v, want := r.Versions[0], step(0, 1, 2); v.Model != "b" || v.Rate != want || !v.LastUsed.Equal(now) {
		t.Errorf("first entry %+v, want b@2 at rate %v last used %v", v, want, now)
	}
	if v, want := r.Versions[1], step(0, 10, 2); v.Model != "a" || v.Rate != want {
		t.Errorf("second entry %+v, want a@1 at rate %v", v, want)
	}
	// Nothing since: rates decay, last use stays.
	r = d.report("gw", 2*time.Second)
	if v, want := r.Versions[1], step(step(0, 10, 2), 0, 2); v.Rate != want {
		t.Errorf("decayed a@1 %+v, want rate %v", v, want)
	}
	// Unused past the retention: dropped.
	now = now.Add(demandRetention + time.Minute)
	if r = d.report("gw", time.Hour); len(r.Versions) != 0 {
		t.Errorf("after the retention: %+v, want empty", r.Versions)
	}
}

// TestDemandUnreported: what the leader merges into its decisions is exactly
// what was requested since the last report, and reading it changes nothing.
func TestDemandUnreported(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	d := newDemand(func() time.Time { return now })
	d.record("a", 1)
	d.report("gw", time.Second)
	if u := d.unreported(); len(u) != 0 {
		t.Fatalf("unreported right after a report: %v, want none", u)
	}
	now = now.Add(time.Second)
	d.record("b", 2)
	d.record("b", 2)
	u := d.unreported()
	want := placement.Demand{Rate: 2 / demandTau.Seconds(), LastUsed: now}
	if got := u[placement.Key{Model: "b", Version: 2}]; len(u) != 1 || got.Rate != want.Rate || !got.LastUsed.Equal(want.LastUsed) {
		t.Fatalf("unreported = %v, want only b@2 %+v", u, want)
	}
	if r := d.report("gw", time.Second); len(r.Versions) != 2 || r.Versions[0].Model != "b" {
		t.Fatalf("report after unreported: %+v, want b@2 then a@1 (nothing consumed)", r.Versions)
	}
}

// TestDemandRateSteady: a steady request rate reads as itself whatever the
// report interval (1 s, the 5 s default, urgent 250 ms writes mixed in), and one
// request reads as about 1/demandTau: the policy can tell a model asked for
// once from one asked for every second.
func TestDemandRateSteady(t *testing.T) {
	for _, iv := range []time.Duration{250 * time.Millisecond, time.Second, 5 * time.Second} {
		now := time.Unix(1_700_000_000, 0)
		d := newDemand(func() time.Time { return now })
		var rate float64
		for range int(10 * demandTau / iv) { // 10 time constants at 4 requests/s
			for range int(4 * iv.Seconds()) {
				d.record("hot", 1)
			}
			now = now.Add(iv)
			rate = d.report("gw", iv).Versions[0].Rate
		}
		if math.Abs(rate-4) > 0.01 {
			t.Errorf("interval %v: 4 requests/s read as %v", iv, rate)
		}
	}
	d := newDemand(nil)
	d.record("once", 1)
	if r := d.report("gw", 250*time.Millisecond).Versions[0].Rate; math.Abs(r-1/demandTau.Seconds()) > 0.001 {
		t.Errorf("one request read as %v requests/s, want about %v", r, 1/demandTau.Seconds())
	}
}

func TestDemandReportBounded(t *testing.T) {
	d := newDemand(nil)
	for i := range maxDemandVersions + 10 {
		d.record("m", int64(i+1))
	}
	if r := d.report("gw", time.Second); len(r.Versions) != maxDemandVersions {
		t.Errorf("report has %d versions, want the bound %d", len(r.Versions), maxDemandVersions)
	}
}

// TestDemandKick: a kick writes a report without waiting for the interval.
func TestDemandKick(t *testing.T) {
	d := newDemand(nil)
	var mu sync.Mutex
	var got []placement.DemandReport
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.run(ctx, "gw", time.Hour, time.Millisecond, func(_ context.Context, r placement.DemandReport) error {
			mu.Lock()
			got = append(got, r)
			mu.Unlock()
			return nil
		}, slog.New(slog.DiscardHandler))
	}()
	d.record("cold", 7)
	d.kick()
	testwait.Until(t, "the kicked report", func() bool { return d.writes.Load() >= 1 })
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if len(got[0].Versions) != 1 || got[0].Versions[0].Model != "cold" {
		t.Errorf("kicked report %+v, want cold@7", got[0])
	}
}

// BenchmarkDemandRecord is the request path's cost of demand recording (one
// call per resolved Predict with --placement), over 50,000 versions.
func BenchmarkDemandRecord(b *testing.B) {
	d := newDemand(nil)
	for i := range 50000 {
		d.record("customer-model", int64(i+1))
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := int64(0)
		for pb.Next() {
			i++
			d.record("customer-model", i%50000+1)
		}
	})
}
