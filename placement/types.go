package placement

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// ErrConfig reports a placement setting that cannot work.
var ErrConfig = errors.New("invalid placement config")

// Key names one model version, the unit that is placed.
type Key struct {
	Model   string
	Version int64
}

// String is "model@version", the form used in logs and explanations.
func (k Key) String() string { return k.Model + "@" + strconv.FormatInt(k.Version, 10) }

// Less orders keys by model, then version.
func (k Key) Less(o Key) bool {
	if k.Model != o.Model {
		return k.Model < o.Model
	}
	return k.Version < o.Version
}

// Host is one serving host (a TF Serving process and its sidecar) in a pool.
type Host struct {
	// ID is unique across the fleet (the Consul service ID). Assignment keys use it.
	ID string
	// Pool is the host's pool (gpu, cpu, ...). Empty means Config.DefaultPool.
	Pool string
	// CapacityBytes is the memory the host gives to models (Consul service meta
	// tfgate_capacity_bytes). A host with none takes no models; that is reported.
	CapacityBytes int64
	// Weight is the host's rendezvous weight. 0 means proportional to capacity
	// within the pool, so a host twice as large is first candidate for twice as
	// many versions.
	Weight float64
	// Frozen: the host keeps what it is assigned but takes no new copies, and its
	// copies are not counted (its sidecar stopped reporting, so nothing says they
	// are loaded, nor that new ones would be): its versions get copies elsewhere.
	// Reported.
	Frozen bool
}

// Version is one catalog entry: a model version that exists in the bucket.
type Version struct {
	Key
	// ObjectBytes is the size of the version's object in S3. Resident size is
	// estimated as ObjectBytes x PoolConfig.MemoryMultiplier until a host reports it.
	ObjectBytes int64
}

// Demand is what the gateways saw for one version (summed over gateways).
type Demand struct {
	// Rate is requests per second.
	Rate float64
	// LastUsed is the last time a request wanted the version. It orders eviction.
	LastUsed time.Time
}

// Requirement is a version that must be resident: what the routing config routes
// to (default, labels, experiment arms) or an operator pin.
type Requirement struct {
	Key
	// Pinned: an operator pin. Pinned versions are placed first.
	Pinned bool
	// Reason says why, for explanations ("default", "label stable", "arm b of exp1", "pin").
	Reason string
	// MinCopies raises the pool's min_copies for this version (0: the pool's).
	MinCopies int
}

// Resident is what a host reports it has loaded (AVAILABLE) and how big it is.
type Resident struct {
	Host string
	Key
	// Bytes is the measured resident size; 0 means loaded, size unknown.
	Bytes int64
}

// Failure is a load that failed on a host: the version is not placed on that
// host again until Until.
type Failure struct {
	Host string
	Key
	Until  time.Time
	Reason string
}

// Entry is one version assigned to one host.
type Entry struct {
	Key
	// Bytes is the resident size the placement counted for it.
	Bytes int64
	// Since is when it was first placed on this host (unix seconds precision on
	// the wire). It is what the minimum residency time is measured from.
	Since time.Time
	// Draining marks an old copy kept only until the version's new copy (a
	// rebalancing move) reports loaded: the sidecar keeps it loaded, the
	// controller drops it on a later decision.
	Draining bool
}

// Assignment is the desired state: per host, the versions it should hold, sorted
// by key. It is what the controller writes to KV and what a sidecar syncs.
type Assignment struct {
	// Hosts maps host ID to its entries (sorted by Key).
	Hosts map[string]HostAssignment
}

// HostAssignment is one host's part of an Assignment.
type HostAssignment struct {
	Pool    string
	Entries []Entry
}

// Input is the snapshot a decision is made from. Decide never changes it.
type Input struct {
	Now      time.Time
	Config   Config
	Hosts    []Host
	Catalog  []Version
	Resident []Resident
	Demand   map[Key]Demand
	Required []Requirement
	Failures []Failure
	// ModelPools maps a model to its pool; models not listed use Config.DefaultPool.
	ModelPools map[string]string
	// Previous is the assignment in force (read from KV); nil when there is none.
	Previous *Assignment
}

// PoolConfig is the policy for one pool.
type PoolConfig struct {
	// MinCopies is the number of hosts a placed version is on at least. Default 1.
	MinCopies int `yaml:"min_copies"`
	// MaxCopies caps the copies demand can add (and is capped by the pool's size). Default 3.
	MaxCopies int `yaml:"max_copies"`
	// CopyRate is the request rate (per second) one copy is planned to serve;
	// demand above it adds copies. Default 100.
	CopyRate float64 `yaml:"copy_rate"`
	// Hysteresis (0 <= h < 1) is the band around a copy boundary inside which the
	// number of copies does not change, so demand that hovers at a boundary does not
	// flap. Default 0.25.
	Hysteresis float64 `yaml:"hysteresis"`
	// MinResidency is how long a placed version stays on a host before least
	// recent use may evict it (the churn guard). Default 5m.
	MinResidency time.Duration `yaml:"min_residency"`
	// MemoryMultiplier estimates resident bytes from object bytes until a host
	// reports the real size. Default 1.2.
	MemoryMultiplier float64 `yaml:"memory_multiplier"`
}

// Config is the placement policy.
type Config struct {
	// DefaultPool is the pool of hosts and models that name none. Default "default".
	DefaultPool string `yaml:"default_pool"`
	// Default applies to pools not listed in Pools (fields left 0 take the defaults).
	Default PoolConfig `yaml:"default"`
	// Pools overrides the policy per pool.
	Pools map[string]PoolConfig `yaml:"pools"`
	// MaxMoves bounds the rebalancing moves one decision makes (a copy past its
	// min residency that is not on one of its best-ranked hosts moving there, e.g.
	// after a host joins), so a join spreads its ~1/N of loads over several
	// decisions. Moves are make-before-break: the old copy stays until the new
	// host reports it loaded. Default 100; negative disables rebalancing.
	MaxMoves int `yaml:"max_moves"`
}

// Defaults.
const (
	DefaultPoolName         = "default"
	DefaultMinCopies        = 1
	DefaultMaxCopies        = 3
	DefaultCopyRate         = 100.0
	DefaultHysteresis       = 0.25
	DefaultMinResidency     = 5 * time.Minute
	DefaultMemoryMultiplier = 1.2
	DefaultMaxMoves         = 100
)

// WithDefaults fills unset fields.
func (p PoolConfig) WithDefaults() PoolConfig {
	if p.MinCopies == 0 {
		p.MinCopies = DefaultMinCopies
	}
	if p.MaxCopies == 0 {
		p.MaxCopies = max(DefaultMaxCopies, p.MinCopies)
	}
	if p.CopyRate == 0 {
		p.CopyRate = DefaultCopyRate
	}
	if p.Hysteresis == 0 {
		p.Hysteresis = DefaultHysteresis
	}
	if p.MinResidency == 0 {
		p.MinResidency = DefaultMinResidency
	}
	if p.MemoryMultiplier == 0 {
		p.MemoryMultiplier = DefaultMemoryMultiplier
	}
	return p
}

// Validate reports every problem at once.
func (p PoolConfig) Validate(name string) error {
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: pool %q: %s", ErrConfig, name, fmt.Sprintf(format, a...)))
	}
	if p.MinCopies < 1 {
		bad("min_copies %d: want >= 1", p.MinCopies)
	}
	if p.MaxCopies < p.MinCopies {
		bad("max_copies %d: want >= min_copies %d", p.MaxCopies, p.MinCopies)
	}
	if !(p.CopyRate > 0) {
		bad("copy_rate %v: want > 0", p.CopyRate)
	}
	if p.Hysteresis < 0 || p.Hysteresis >= 1 {
		bad("hysteresis %v: want 0 <= h < 1", p.Hysteresis)
	}
	if p.MinResidency < 0 {
		bad("min_residency %v: want >= 0", p.MinResidency)
	}
	if !(p.MemoryMultiplier > 0) || p.MemoryMultiplier > 100 {
		bad("memory_multiplier %v: want 0 < m <= 100", p.MemoryMultiplier)
	}
	return errors.Join(errs...)
}

// WithDefaults fills unset fields, including each pool's.
func (c Config) WithDefaults() Config {
	if c.DefaultPool == "" {
		c.DefaultPool = DefaultPoolName
	}
	c.Default = c.Default.WithDefaults()
	if len(c.Pools) > 0 {
		pools := make(map[string]PoolConfig, len(c.Pools))
		for name, p := range c.Pools {
			pools[name] = p.WithDefaults()
		}
		c.Pools = pools
	}
	if c.MaxMoves == 0 {
		c.MaxMoves = DefaultMaxMoves
	}
	return c
}

// Validate reports every problem at once. Call it on WithDefaults' result.
func (c Config) Validate() error {
	errs := []error{c.Default.Validate("default")}
	for name, p := range c.Pools {
		if name == "" {
			errs = append(errs, fmt.Errorf("%w: a pool needs a name", ErrConfig))
		}
		errs = append(errs, p.Validate(name))
	}
	return errors.Join(errs...)
}

// Pool returns the policy of a pool.
func (c Config) Pool(name string) PoolConfig {
	if p, ok := c.Pools[name]; ok {
		return p
	}
	return c.Default
}
