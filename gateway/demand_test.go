package gateway

import (
	"context"
	"log/slog"
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
	// Most recently used first; rate is the EWMA of count/interval.
	if v := r.Versions[0]; v.Model != "b" || v.Rate != demandEWMA*0.5 || !v.LastUsed.Equal(now) {
		t.Errorf("first entry %+v, want b@2 at rate %v last used %v", v, demandEWMA*0.5, now)
	}
	if v := r.Versions[1]; v.Model != "a" || v.Rate != demandEWMA*5 {
		t.Errorf("second entry %+v, want a@1 at rate %v", v, demandEWMA*5)
	}
	// Nothing since: rates decay, last use stays.
	r = d.report("gw", 2*time.Second)
	if v := r.Versions[1]; v.Rate != demandEWMA*demandEWMA*5 {
		t.Errorf("decayed a@1 %+v", v)
	}
	// Unused past the retention: dropped.
	now = now.Add(demandRetention + time.Minute)
	if r = d.report("gw", time.Hour); len(r.Versions) != 0 {
		t.Errorf("after the retention: %+v, want empty", r.Versions)
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
