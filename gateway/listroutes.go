package gateway

import (
	"context"
	"errors"
	"fmt"

	"github.com/tfgate/tfgate/gateway/route"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// ListRoutes describes the routing snapshot now serving: one model or all.
func (s *Server) ListRoutes(ctx context.Context, req *tfgatev1.ListRoutesRequest) (*tfgatev1.ListRoutesResponse, error) {
	snap := s.builder.current()
	resp := &tfgatev1.ListRoutesResponse{
		ConfigGeneration: snap.routes.Generation,
		ConfigFile:       s.opts.ConfigPath,
		ReloadFailures:   s.stats.reloadFailures.Load(),
		LastReloadError:  s.builder.lastReloadError(),
	}
	if name := req.GetModel(); name != "" {
		if e, ok := snap.routes.Ensemble(name); ok {
			resp.Ensembles = []*tfgatev1.EnsembleRoutes{describeEnsemble(e)}
			return resp, nil
		}
		m, ok := snap.routes.Model(name)
		if !ok {
			return nil, toStatus(&route.RouteError{Model: name, Reason: "it is not in the routing config; call ListRoutes with no model to list them", Err: route.ErrUnknownModel})
		}
		resp.Models = []*tfgatev1.ModelRoutes{describe(snap, m)}
		resp.Models[0].Shadow = s.shadows.describe(s, snap, m.Name)
		return resp, nil
	}
	for _, m := range snap.routes.Models() {
		d := describe(snap, m)
		d.Shadow = s.shadows.describe(s, snap, m.Name)
		resp.Models = append(resp.Models, d)
	}
	for _, e := range snap.routes.Ensembles() {
		resp.Ensembles = append(resp.Ensembles, describeEnsemble(e))
	}
	return resp, nil
}

func describe(snap *snapshot, m *route.ModelRoutes) *tfgatev1.ModelRoutes {
	out := &tfgatev1.ModelRoutes{
		Model:        m.Name,
		DefaultRoute: m.Default,
		Labels:       m.Labels,
		Pools:        m.Pools,
	}
	if _, _, err := snap.routes.Resolve(m.Name, route.Target{}, "introspection"); err != nil {
		var re *route.RouteError
		if errors.As(err, &re) {
			out.DefaultReason = re.Error()
		} else {
			out.DefaultReason = err.Error()
		}
	}
	for _, v := range m.Versions {
		out.Versions = append(out.Versions, &tfgatev1.VersionState{
			Version:          v.Version,
			Routable:         v.Routable,
			Reason:           v.Reason,
			Hosts:            v.Hosts,
			HasPreprocessing: v.HasSpec,
		})
	}
	if arms := m.Arms(); arms != nil {
		x := &tfgatev1.Experiment{Name: m.ExpName, Warning: m.SplitWarning()}
		for _, a := range arms {
			reason := a.Reason
			if a.Routable {
				reason = ""
			} else if reason == "" {
				reason = fmt.Sprintf("version %d is not routable", a.Version)
			}
			x.Arms = append(x.Arms, &tfgatev1.Arm{
				Name: a.Name, Version: a.Version, Weight: a.Weight,
				EffectiveShare: a.EffectiveShare, Routable: a.Routable, Reason: reason,
			})
		}
		out.Experiment = x
	}
	return out
}
