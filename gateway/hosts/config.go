package hosts

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tfgate/tfgate/gateway/discovery"
)

// ConsulPool selects a pool's hosts in Consul.
type ConsulPool struct {
	// Service is the Consul service name of the TF Serving hosts (required).
	Service string `yaml:"service"`
	// Tag keeps only instances with this tag ("gpu", "cpu", ...). Default: none.
	Tag string `yaml:"tag"`
}

// PoolConfig is one pool: exactly one of Static or Consul.
type PoolConfig struct {
	// Static is a fixed list of host:port gRPC addresses.
	Static []string `yaml:"static"`
	// Consul watches a Consul service's passing instances.
	Consul *ConsulPool `yaml:"consul"`
}

// ReadinessConfig is how hosts are polled with GetModelStatus. Each interval a
// host is polled for its priority models (not answered yet, a wanted version it
// lacks, a call that got NOT_FOUND) and for the next interval x
// max_polls_per_second models of a round-robin resync of the rest.
type ReadinessConfig struct {
	// Interval between poll rounds. Default: 1s.
	Interval time.Duration `yaml:"interval"`
	// MaxPollsPerSecond caps the resync polls per host per second, so a full
	// resync of N models takes N / max_polls_per_second seconds; with at most
	// interval x max_polls_per_second models every (host, model) is polled every
	// interval. Priority polls come on top. Default: 1000 (a resync of 50,000 models
	// in 50 s for about 5% of a gateway core per host; every model every second up
	// to 1,000 models).
	MaxPollsPerSecond int `yaml:"max_polls_per_second"`
	// Concurrency bounds the GetModelStatus calls in flight, all hosts together.
	// Default: 16.
	Concurrency int `yaml:"concurrency"`
	// Timeout bounds one GetModelStatus call. Default: 2s.
	Timeout time.Duration `yaml:"timeout"`
	// FailureThreshold is how many consecutive failed polls of a host drop what it
	// reported. Default: 2.
	FailureThreshold int `yaml:"failure_threshold"`
}

// RetryConfig is the retry on a different host after a transport failure.
type RetryConfig struct {
	// MaxAttempts counts the first call: 2 means one retry, 1 disables. Default: 2.
	MaxAttempts int `yaml:"max_attempts"`
	// MinRemaining is the least deadline left for a retry to be tried. Default: 10ms.
	MinRemaining time.Duration `yaml:"min_remaining"`
}

// EjectionConfig is outlier detection: hosts that keep failing are left out.
type EjectionConfig struct {
	// ConsecutiveFailures ejects a host after this many transport failures in a
	// row (1 after it has been ejected before and not yet succeeded). Default: 3.
	ConsecutiveFailures int `yaml:"consecutive_failures"`
	// BaseDuration is the first ejection's length; each further ejection doubles it.
	// Default: 1s.
	BaseDuration time.Duration `yaml:"base_duration"`
	// MaxDuration caps an ejection. Default: 30s.
	MaxDuration time.Duration `yaml:"max_duration"`
}

// HedgingConfig sends a second copy of a slow call to another host.
type HedgingConfig struct {
	// Enabled turns hedging on. Default: false.
	Enabled bool `yaml:"enabled"`
	// Delay is how long the first call runs before the hedge is sent. Default: 50ms.
	Delay time.Duration `yaml:"delay"`
	// BudgetPercent caps hedges at this percentage of calls. Default: 5.
	BudgetPercent float64 `yaml:"budget_percent"`
}

// Config is the backend hosts' configuration.
type Config struct {
	// Pools by name (required, at least one).
	Pools map[string]PoolConfig `yaml:"pools"`
	// Consul is the Consul client used by every Consul pool. Default: the
	// CONSUL_HTTP_* environment, else 127.0.0.1:8500.
	Consul discovery.ClientConfig `yaml:"consul"`
	// ConsulWaitTime is the blocking-query wait. Default: 30s.
	ConsulWaitTime time.Duration `yaml:"consul_wait_time"`
	// Readiness polling.
	Readiness ReadinessConfig `yaml:"readiness"`
	// Retry on transport failures.
	Retry RetryConfig `yaml:"retry"`
	// Ejection of failing hosts.
	Ejection EjectionConfig `yaml:"ejection"`
	// Hedging of slow calls. Default: off.
	Hedging HedgingConfig `yaml:"hedging"`
	// MaxRecvMsgSize is the largest backend response accepted, bytes. Default: 256 MiB
	// (grpc-go's own default of 4 MiB is too small for large outputs).
	MaxRecvMsgSize int `yaml:"max_recv_msg_size"`
	// MaxSendMsgSize is the largest backend request sent, bytes. Default: 256 MiB.
	MaxSendMsgSize int `yaml:"max_send_msg_size"`
}

// DefaultMsgSize is the default backend message size limit in both directions.
const DefaultMsgSize = 256 << 20

// DefaultConfig returns the defaults (with no pools).
func DefaultConfig() Config {
	return Config{
		ConsulWaitTime: discovery.DefaultWaitTime,
		Readiness:      ReadinessConfig{Interval: time.Second, MaxPollsPerSecond: 1000, Concurrency: 16, Timeout: 2 * time.Second, FailureThreshold: 2},
		Retry:          RetryConfig{MaxAttempts: 2, MinRemaining: 10 * time.Millisecond},
		Ejection:       EjectionConfig{ConsecutiveFailures: 3, BaseDuration: time.Second, MaxDuration: 30 * time.Second},
		Hedging:        HedgingConfig{Delay: 50 * time.Millisecond, BudgetPercent: 5},
		MaxRecvMsgSize: DefaultMsgSize,
		MaxSendMsgSize: DefaultMsgSize,
	}
}

// ErrConfig reports an invalid hosts configuration.
var ErrConfig = errors.New("invalid hosts config")

// Decode reads YAML over the defaults, rejecting unknown fields, and validates.
func Decode(data []byte) (Config, error) {
	cfg := DefaultConfig()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// DecodeNode decodes a YAML node (the routing config's backends: section) like
// Decode. An absent node (zero Kind) is an error: at least one pool is required.
func DecodeNode(n *yaml.Node) (Config, error) {
	if n == nil || n.Kind == 0 {
		return Config{}, fmt.Errorf("%w: backends: missing (it needs at least one pool)", ErrConfig)
	}
	data, err := yaml.Marshal(n)
	if err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return Decode(data)
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrConfig}, a...)...))
	}
	if len(c.Pools) == 0 {
		bad("pools: at least one pool is required")
	}
	names := make([]string, 0, len(c.Pools))
	for n := range c.Pools {
		names = append(names, n)
	}
	slices.Sort(names)
	hasConsul := false
	for _, n := range names {
		p := c.Pools[n]
		if n == "" {
			bad("pools: empty pool name")
		}
		switch {
		case len(p.Static) > 0 && p.Consul != nil:
			bad("pool %q: set static or consul, not both", n)
		case len(p.Static) == 0 && p.Consul == nil:
			bad("pool %q: set static (a list of host:port) or consul (service, tag)", n)
		case p.Consul != nil:
			hasConsul = true
			if p.Consul.Service == "" {
				bad("pool %q: consul.service is required", n)
			}
		}
		for _, a := range p.Static {
			if err := checkAddr(a); err != nil {
				bad("pool %q: static address %q: %v", n, a, err)
			}
		}
	}
	if hasConsul {
		if err := c.Consul.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.ConsulWaitTime <= 0 || c.ConsulWaitTime > 10*time.Minute {
		bad("consul_wait_time %v: want between 0 and 10m", c.ConsulWaitTime)
	}
	if c.Readiness.Interval < 10*time.Millisecond {
		bad("readiness.interval %v: want at least 10ms", c.Readiness.Interval)
	}
	if c.Readiness.MaxPollsPerSecond < 1 || c.Readiness.MaxPollsPerSecond > 1_000_000 {
		bad("readiness.max_polls_per_second %d: want 1 to 1000000 (per host)", c.Readiness.MaxPollsPerSecond)
	}
	if c.Readiness.Concurrency < 1 {
		bad("readiness.concurrency %d: want at least 1", c.Readiness.Concurrency)
	}
	if c.Readiness.Timeout <= 0 {
		bad("readiness.timeout %v: want > 0", c.Readiness.Timeout)
	}
	if c.Readiness.FailureThreshold < 1 {
		bad("readiness.failure_threshold %d: want at least 1", c.Readiness.FailureThreshold)
	}
	if c.Retry.MaxAttempts < 1 || c.Retry.MaxAttempts > 5 {
		bad("retry.max_attempts %d: want 1 (no retry) to 5", c.Retry.MaxAttempts)
	}
	if c.Retry.MinRemaining < 0 {
		bad("retry.min_remaining %v: want >= 0", c.Retry.MinRemaining)
	}
	if c.Ejection.ConsecutiveFailures < 1 {
		bad("ejection.consecutive_failures %d: want at least 1", c.Ejection.ConsecutiveFailures)
	}
	if c.Ejection.BaseDuration <= 0 || c.Ejection.MaxDuration < c.Ejection.BaseDuration {
		bad("ejection: base_duration %v, max_duration %v: want 0 < base <= max", c.Ejection.BaseDuration, c.Ejection.MaxDuration)
	}
	if c.Hedging.Enabled && c.Hedging.Delay <= 0 {
		bad("hedging.delay %v: want > 0", c.Hedging.Delay)
	}
	if c.Hedging.BudgetPercent < 0 || c.Hedging.BudgetPercent > 100 {
		bad("hedging.budget_percent %v: want 0 to 100", c.Hedging.BudgetPercent)
	}
	if c.MaxRecvMsgSize < 1<<20 || c.MaxSendMsgSize < 1<<20 {
		bad("max_recv_msg_size %d, max_send_msg_size %d: want at least 1 MiB", c.MaxRecvMsgSize, c.MaxSendMsgSize)
	}
	return errors.Join(errs...)
}

func checkAddr(a string) error {
	h, p, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("want host:port: %w", err)
	}
	if h == "" {
		return errors.New("empty host")
	}
	if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q: want 1-65535", p)
	}
	return nil
}
