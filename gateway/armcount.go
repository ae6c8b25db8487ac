package gateway

import (
	"sync"
	"sync/atomic"

	"github.com/tfgate/tfgate/gateway/route"
)

// armKey names one arm of one model's experiment.
type armKey struct{ model, experiment, arm string }

// armCounters count the requests each experiment arm was assigned since the
// gateway started: the observed split the status page sets beside each arm's
// configured weight and effective share. A count lives as long as its arm is
// configured (across reloads that keep it); an arm that leaves the config is
// forgotten, and starts again from zero if it comes back.
//
// The request path reads a snapshot's immutable map (no lock) and adds to the
// arm's atomic; forConfig runs in the builder, under its build lock.
type armCounters struct {
	mu  sync.Mutex
	cfg *route.Config             // the config cur was made for
	cur map[armKey]*atomic.Uint64 // cfg's arms
}

// forConfig returns the counters of cfg's arms, keeping the counts of arms the
// previous config had too. The map must not be modified.
func (c *armCounters) forConfig(cfg *route.Config) map[armKey]*atomic.Uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cfg == c.cfg {
		return c.cur
	}
	next := map[armKey]*atomic.Uint64{}
	for name, m := range cfg.Models {
		if m.Experiment == nil {
			continue
		}
		for _, a := range m.Experiment.Arms {
			k := armKey{name, m.Experiment.Name, a.Name}
			n := c.cur[k]
			if n == nil {
				n = new(atomic.Uint64)
			}
			next[k] = n
		}
	}
	c.cfg, c.cur = cfg, next
	return next
}

// countArm counts one request assigned to an experiment arm (the request path;
// no lock, no allocation).
func (s *snapshot) countArm(model string, rt route.Route) {
	if n := s.arms[armKey{model, rt.Experiment, rt.Arm}]; n != nil {
		n.Add(1)
	}
}

// armCount is the assignments counted for an arm since start (0 for an arm
// the snapshot's config does not have).
func (s *snapshot) armCount(model, experiment, arm string) uint64 {
	if n := s.arms[armKey{model, experiment, arm}]; n != nil {
		return n.Load()
	}
	return 0
}
