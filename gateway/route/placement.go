package route

import (
	"fmt"
	"slices"
	"time"

	"github.com/tfgate/tfgate/placement"
)

// Defaults of the placement: section (used when the gateway runs with --placement).
const (
	// DefaultColdStartMaxWait bounds how long a request for a version no host has
	// waits for its load.
	DefaultColdStartMaxWait = 30 * time.Second
	// DefaultColdStartMaxQueue bounds the requests waiting for cold versions of one
	// model.
	DefaultColdStartMaxQueue = 256
	// DefaultColdStartPushback is the retry delay a cold-start UNAVAILABLE suggests
	// (grpc-retry-pushback-ms) when the load's remaining time is unknown.
	DefaultColdStartPushback = time.Second
	// DefaultColdStartMargin is kept back from the caller's deadline, so that a
	// request that cannot be served in time gets the cold-start UNAVAILABLE (with
	// its pushback) rather than DEADLINE_EXCEEDED.
	DefaultColdStartMargin = 50 * time.Millisecond
	// DefaultDemandInterval is how often a gateway writes its demand report.
	DefaultDemandInterval = 5 * time.Second
	// MinDemandInterval is the least time between two demand writes of one
	// gateway, urgent (cold-start) writes included.
	MinDemandInterval = 250 * time.Millisecond
)

// Placement is the routing config's placement: section: the placement policy the
// leader's controller decides with, the pins, and the gateway's own cold-start
// and demand-report settings. Every field is optional; the defaults work without
// tuning. It matters only to a gateway run with --placement.
type Placement struct {
	// DefaultPool is the pool of hosts and models that name none. Default "default".
	DefaultPool string `yaml:"default_pool"`
	// Default is the policy of pools not listed in Pools (placement.PoolConfig;
	// its fields' defaults: min_copies 1, max_copies 3, copy_rate 100,
	// hysteresis 0.25, min_residency 5m, memory_multiplier 1.2).
	Default placement.PoolConfig `yaml:"default"`
	// Pools overrides the policy per pool (by the backends: pool name).
	Pools map[string]placement.PoolConfig `yaml:"pools"`
	// MaxMoves bounds rebalancing moves per decision. Default 100; negative: none.
	MaxMoves int `yaml:"max_moves"`
	// Pins are versions kept resident whatever their demand. Default none.
	Pins []Pin `yaml:"pins"`
	// ColdStart bounds requests waiting for a version to load.
	ColdStart ColdStart `yaml:"cold_start"`
	// DemandInterval is how often the gateway writes its demand report to KV.
	// Default 5s; at least 250ms (MinDemandInterval).
	DemandInterval time.Duration `yaml:"demand_interval"`
}

// Pin is one pinned version.
type Pin struct {
	Model   string `yaml:"model"`
	Version int64  `yaml:"version"`
	// MinCopies raises the pool's min_copies for this version. Default 0: the pool's.
	MinCopies int `yaml:"min_copies"`
}

// ColdStart bounds how requests for a version no host has are held.
type ColdStart struct {
	// MaxWait bounds one request's wait (besides its deadline). Default 30s.
	MaxWait time.Duration `yaml:"max_wait"`
	// MaxQueue bounds the requests waiting for cold versions of one model; more
	// are RESOURCE_EXHAUSTED. Default 256.
	MaxQueue int `yaml:"max_queue"`
	// Pushback is the retry delay suggested when the load's end is unknown. Default 1s.
	Pushback time.Duration `yaml:"pushback"`
	// DeadlineMargin is kept back from the caller's deadline. Default 50ms.
	DeadlineMargin time.Duration `yaml:"deadline_margin"`
}

// WithDefaults fills unset fields.
func (p Placement) WithDefaults() Placement {
	pc := p.Policy()
	p.DefaultPool, p.Default, p.Pools, p.MaxMoves = pc.DefaultPool, pc.Default, pc.Pools, pc.MaxMoves
	if p.ColdStart.MaxWait == 0 {
		p.ColdStart.MaxWait = DefaultColdStartMaxWait
	}
	if p.ColdStart.MaxQueue == 0 {
		p.ColdStart.MaxQueue = DefaultColdStartMaxQueue
	}
	if p.ColdStart.Pushback == 0 {
		p.ColdStart.Pushback = DefaultColdStartPushback
	}
	if p.ColdStart.DeadlineMargin == 0 {
		p.ColdStart.DeadlineMargin = DefaultColdStartMargin
	}
	if p.DemandInterval == 0 {
		p.DemandInterval = DefaultDemandInterval
	}
	return p
}

// Policy is the section as the placement package's Config (defaults applied).
func (p Placement) Policy() placement.Config {
	return placement.Config{DefaultPool: p.DefaultPool, Default: p.Default, Pools: p.Pools, MaxMoves: p.MaxMoves}.WithDefaults()
}

// finishPlacement applies the placement: section's defaults and reports every
// problem of it.
func (c *Config) finishPlacement(ve *ValidationError) {
	c.Placement = c.Placement.WithDefaults()
	p := c.Placement
	if err := p.Policy().Validate(); err != nil {
		for _, e := range unjoin(err) {
			ve.add("", "placement: %v", e)
		}
	}
	for name := range p.Pools {
		if c.knownPools != nil && !c.knownPools[name] && len(c.knownPools) > 0 {
			ve.add("", "placement: pools: %q is not a pool of backends:", name)
		}
	}
	seen := map[[2]string]bool{}
	for i, pin := range p.Pins {
		where := fmt.Sprintf("placement.pins[%d]", i)
		switch {
		case pin.Model == "":
			ve.add("", "%s: model is required", where)
		case c.Models[pin.Model] == nil:
			ve.add("", "%s: model %q is not in models:", where, pin.Model)
		}
		if pin.Version <= 0 {
			ve.add("", "%s: version %d: want a version number > 0", where, pin.Version)
		}
		if pin.MinCopies < 0 {
			ve.add("", "%s: min_copies %d: want >= 0", where, pin.MinCopies)
		}
		k := [2]string{pin.Model, fmt.Sprint(pin.Version)}
		if seen[k] {
			ve.add("", "%s: %s@%d is pinned twice", where, pin.Model, pin.Version)
		}
		seen[k] = true
	}
	cs := p.ColdStart
	if cs.MaxWait < 0 || cs.MaxWait > time.Hour {
		ve.add("", "placement.cold_start: max_wait %v: want between 0 and 1h", cs.MaxWait)
	}
	if cs.MaxQueue < 0 || cs.MaxQueue > 1<<20 {
		ve.add("", "placement.cold_start: max_queue %d: want between 1 and %d", cs.MaxQueue, 1<<20)
	}
	if cs.Pushback < 0 || cs.Pushback > 10*time.Minute {
		ve.add("", "placement.cold_start: pushback %v: want between 0 and 10m", cs.Pushback)
	}
	if cs.DeadlineMargin < 0 || cs.DeadlineMargin > time.Minute {
		ve.add("", "placement.cold_start: deadline_margin %v: want between 0 and 1m", cs.DeadlineMargin)
	}
	if p.DemandInterval < MinDemandInterval || p.DemandInterval > 10*time.Minute {
		ve.add("", "placement: demand_interval %v: want between %v and 10m", p.DemandInterval, MinDemandInterval)
	}
}

// Requirements are the versions this config needs resident, for the placement
// controller: every version a default, label or experiment arm names, every
// version an ensemble member pins, and the pins; and each model's pool (its first).
func (c *Config) Requirements() ([]placement.Requirement, map[string]string) {
	var reqs []placement.Requirement
	pools := make(map[string]string, len(c.Models))
	for _, name := range c.ModelNames() {
		m := c.Models[name]
		if len(m.Pools) > 0 {
			pools[name] = m.Pools[0]
		}
		for _, v := range m.NamedVersions() {
			reqs = append(reqs, placement.Requirement{Key: placement.Key{Model: name, Version: v}, Reason: m.reason(v)})
		}
	}
	for _, en := range c.EnsembleNames() {
		for _, mb := range c.Ensembles[en].Members {
			if v := mb.Version.N; v > 0 && !slices.Contains(c.Models[mb.Model].NamedVersions(), v) {
				reqs = append(reqs, placement.Requirement{Key: placement.Key{Model: mb.Model, Version: v}, Reason: "ensemble " + en + " member " + mb.Name})
			}
		}
	}
	for _, pin := range c.Placement.Pins {
		reqs = append(reqs, placement.Requirement{Key: placement.Key{Model: pin.Model, Version: pin.Version}, Pinned: true, Reason: "pin", MinCopies: pin.MinCopies})
	}
	return reqs, pools
}

// reason says why the config needs version v of m ("default", "label stable",
// "arm b of exp1"; the first that applies).
func (m *Model) reason(v int64) string {
	if m.DefaultVersion == v {
		return "default"
	}
	for l, lv := range m.Labels {
		if lv.N == v {
			return "label " + l
		}
	}
	if m.Experiment != nil {
		for _, a := range m.Experiment.Arms {
			if a.Version.N == v {
				return "arm " + a.Name + " of " + m.Experiment.Name
			}
		}
	}
	return "routing config"
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, unjoin(e)...)
		}
		return out
	}
	if err == nil {
		return nil
	}
	return []error{err}
}
