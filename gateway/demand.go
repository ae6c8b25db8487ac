package gateway

import (
	"cmp"
	"context"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tfgate/tfgate/placement"
)

// Demand reports.
//
// Every Predict that resolves a version (and every cold-start request) records
// it in a demand: one sync.Map lookup and two atomic stores, no lock, no
// allocation once the version has been seen. The run loop writes one
// placement.DemandReport per gateway (one KV key, <prefix>/demand/<id>): every
// interval (placement.demand_interval, default 5s), and at once (coalesced)
// when a request asks for a version no host has. Writes are at least
// route.MinDemandInterval (250ms) apart, so one gateway writes at most
// 1/interval per second in steady state (0.2/s by default) and never more than
// 4/s, however many models it serves. A report holds at most
// maxDemandVersions versions (the most recently used), used within
// demandRetention.

const (
	// maxDemandVersions bounds the versions in one report (~15 bytes each
	// compressed: well under Consul's 512 KiB value limit).
	maxDemandVersions = 20000
	// demandRetention: versions unused for this long leave the report.
	demandRetention = time.Hour
	// demandTau is the time constant of the reported request rates: an
	// exponentially decayed count, so that a steady rate reads as itself
	// whatever the report interval, one request adds about 1/demandTau, and a
	// version no longer asked for fades with a half-life of ~0.7 demandTau. The
	// placement policy keeps the most requested versions by it, so a model asked
	// for once (the Zipf tail) cannot evict a model asked for every second.
	demandTau = time.Minute
)

type demandEntry struct {
	count atomic.Int64 // requests since the last report
	last  atomic.Int64 // unix nanos of the last request
	rate  float64      // decayed requests/s (demandTau); run loop only
}

// demand aggregates per-version request counts and last-use times.
type demand struct {
	m       sync.Map // vkey -> *demandEntry
	urgent  chan struct{}
	now     func() time.Time
	writes  atomic.Int64 // reports written, for tests and the status page
	metrics *coldMetrics // nil: none
}

func newDemand(now func() time.Time) *demand {
	if now == nil {
		now = time.Now
	}
	return &demand{urgent: make(chan struct{}, 1), now: now}
}

// record counts one request for model@v.
func (d *demand) record(model string, v int64) {
	k := vkey{model, v}
	e, ok := d.m.Load(k)
	if !ok {
		e, _ = d.m.LoadOrStore(k, &demandEntry{})
	}
	de := e.(*demandEntry)
	de.count.Add(1)
	de.last.Store(d.now().UnixNano())
}

// kick asks for a report now (coalesced).
func (d *demand) kick() {
	select {
	case d.urgent <- struct{}{}:
	default:
	}
}

// unreported returns the versions requested since the last report, as the
// leader's decision should see them now (placement.ControllerConfig.LocalDemand):
// last use as recorded, and as rate the lower bound the requests alone give
// (each adds about 1/demandTau). It resets nothing; the next report counts them.
func (d *demand) unreported() map[placement.Key]placement.Demand {
	out := map[placement.Key]placement.Demand{}
	d.m.Range(func(key, val any) bool {
		k, e := key.(vkey), val.(*demandEntry)
		if n := e.count.Load(); n > 0 {
			out[placement.Key{Model: k.model, Version: k.version}] = placement.Demand{
				Rate: float64(n) / demandTau.Seconds(), LastUsed: time.Unix(0, e.last.Load())}
		}
		return true
	})
	return out
}

// report builds the report from the counts since the last one (elapsed ago).
func (d *demand) report(gateway string, elapsed time.Duration) placement.DemandReport {
	now := d.now()
	secs := max(elapsed.Seconds(), 1e-3)
	r := placement.DemandReport{Gateway: gateway, Updated: now.UTC()}
	d.m.Range(func(key, val any) bool {
		k, e := key.(vkey), val.(*demandEntry)
		n := e.count.Swap(0)
		decay := math.Exp(-secs / demandTau.Seconds())
		e.rate = e.rate*decay + float64(n)*(1-decay)/secs
		if e.rate < 1e-3 {
			e.rate = 0
		}
		last := time.Unix(0, e.last.Load())
		if now.Sub(last) > demandRetention && n == 0 {
			d.m.Delete(k)
			return true
		}
		r.Versions = append(r.Versions, placement.DemandVersion{Model: k.model, Version: k.version, Rate: e.rate, LastUsed: last.UTC()})
		return true
	})
	slices.SortFunc(r.Versions, func(a, b placement.DemandVersion) int {
		if c := b.LastUsed.Compare(a.LastUsed); c != 0 {
			return c
		}
		return cmp.Or(cmp.Compare(a.Model, b.Model), cmp.Compare(a.Version, b.Version))
	})
	if len(r.Versions) > maxDemandVersions {
		r.Versions = r.Versions[:maxDemandVersions]
	}
	return r
}

// run writes reports with put until ctx is done: every interval, and on kick
// (at least minGap after the previous write).
func (d *demand) run(ctx context.Context, gateway string, interval, minGap time.Duration, put func(context.Context, placement.DemandReport) error, log *slog.Logger) {
	t := time.NewTimer(interval)
	defer t.Stop()
	lastWrite := d.now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-d.urgent:
			if wait := minGap - d.now().Sub(lastWrite); wait > 0 {
				gap := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					gap.Stop()
					return
				case <-gap.C:
				}
			}
		}
		now := d.now()
		r := d.report(gateway, now.Sub(lastWrite))
		lastWrite = now
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := put(wctx, r); err != nil && ctx.Err() == nil {
			log.Warn("gateway: demand report not written; the next one carries it", "err", err)
			if d.metrics != nil {
				d.metrics.writes.Add(ctx, 1, writeFailed)
			}
		} else if err == nil {
			d.writes.Add(1)
			if d.metrics != nil {
				d.metrics.writes.Add(ctx, 1, writeOK)
			}
		}
		cancel()
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(interval)
	}
}
