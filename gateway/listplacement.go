package gateway

import (
	"context"
	"slices"
	"time"

	"github.com/tfgate/tfgate/placement"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// ListPlacement describes the placement as this gateway sees it: per model
// version, where the assignment in KV puts it, which hosts report it AVAILABLE
// (what requests are routed to), whether it is loading, why it is where it is
// (this gateway's own decision when it leads, else the leader's report), the
// requests held for it, and which hosts keep it unloaded in their disk cache
// (from their fresh statuses). The versions listed are those assigned, reported
// on by the leader, needed by the routing config, or waited for now. Without
// --placement it answers enabled=false.
func (s *Server) ListPlacement(ctx context.Context, req *tfgatev1.ListPlacementRequest) (*tfgatev1.ListPlacementResponse, error) {
	p := s.placer
	if p == nil {
		return &tfgatev1.ListPlacementResponse{}, nil
	}
	resp := &tfgatev1.ListPlacementResponse{Enabled: true, ThisGatewayLeads: p.ctl.IsLeader()}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	report, rerr := p.store.ReadReport(rctx)
	cancel()
	if rerr == nil {
		resp.Leader = report.Leader
		resp.ReportAgeSeconds = time.Since(report.Generated).Seconds()
		for _, pr := range report.Problems {
			resp.Problems = append(resp.Problems, pr.Message)
		}
	}
	// The hosts' disk caches, from their fresh statuses.
	cached := map[placement.Key][]string{}
	rctx, cancel = context.WithTimeout(ctx, 5*time.Second)
	statuses, serr := p.store.ReadStatuses(rctx)
	cancel()
	if serr == nil {
		fresh := time.Now().Add(-p.ctl.ReportTTL())
		for host, hs := range statuses {
			if hs.Updated.Before(fresh) {
				continue
			}
			for _, c := range hs.Cached {
				k := placement.Key{Model: c.Model, Version: c.Version}
				cached[k] = append(cached[k], host)
			}
		}
	}
	reported := map[placement.Key]placement.VersionState{}
	for _, v := range report.Versions {
		reported[v.Key] = v
	}
	snap := s.builder.current()
	cfg := snap.routes.Config
	reqs, _ := cfg.Requirements()
	required := map[placement.Key]string{}
	for _, r := range reqs {
		if required[r.Key] == "" {
			required[r.Key] = r.Reason
		}
	}
	var waiting map[vkey]int
	if s.cold != nil {
		waiting = s.cold.waitingNow()
	}
	st := p.state.Load()
	keys := map[placement.Key]bool{}
	add := func(k placement.Key) {
		if (req.GetModel() == "" || k.Model == req.GetModel()) && cfg.Models[k.Model] != nil {
			keys[k] = true
		}
	}
	for k := range st.where {
		add(k)
	}
	for k := range reported {
		add(k)
	}
	for k := range required {
		add(k)
	}
	for k, n := range waiting {
		resp.ColdWaiting += int64(n)
		add(placement.Key{Model: k.model, Version: k.version})
	}
	sorted := make([]placement.Key, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	slices.SortFunc(sorted, func(a, b placement.Key) int {
		if a.Less(b) {
			return -1
		}
		if b.Less(a) {
			return 1
		}
		return 0
	})
	var last *placement.Decision
	if resp.ThisGatewayLeads {
		last = p.ctl.Last()
	}
	for _, k := range sorted {
		pv := &tfgatev1.PlacedVersion{Model: k.Model, Version: k.Version, Required: required[k], ColdWaiting: int64(waiting[vkey{k.Model, k.Version}])}
		for _, c := range st.where[k] {
			pv.Assigned = append(pv.Assigned, &tfgatev1.PlacedCopy{Host: c.host, SinceUnix: c.since.Unix(), Draining: c.draining})
		}
		slices.SortFunc(pv.Assigned, func(a, b *tfgatev1.PlacedCopy) int {
			switch {
			case a.Host < b.Host:
				return -1
			case a.Host > b.Host:
				return 1
			}
			return 0
		})
		pv.Cached = slices.Sorted(slices.Values(cached[k]))
		pv.Resident = s.opts.Backends.AvailableHosts(k.Model, k.Version, cfg.Models[k.Model].Pools)
		pv.Loading = len(pv.Assigned) > 0 && len(pv.Resident) == 0
		if last != nil {
			if e, ok := last.Explain(k); ok {
				pv.State, pv.Why = e.State.String(), e.String()
			}
		} else if v, ok := reported[k]; ok {
			pv.State, pv.Why = v.State.String(), v.Why
		} else if len(pv.Assigned) > 0 {
			pv.State = placement.Placed.String()
		}
		resp.Versions = append(resp.Versions, pv)
	}
	return resp, nil
}
