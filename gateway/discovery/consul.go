package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// ErrConfig reports a Consul setting that cannot work.
var ErrConfig = errors.New("invalid consul config")

// TLSConfig are the Consul client TLS settings. Empty fields fall back to the
// CONSUL_CACERT, CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY, CONSUL_TLS_SERVER_NAME and
// CONSUL_HTTP_SSL_VERIFY environment variables.
type TLSConfig struct {
	// CAFile verifies the agent's certificate. Default: $CONSUL_CACERT, else system roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are the client certificate for mutual TLS. Default: none.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName overrides the name checked in the agent's certificate. Default: the host.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify disables certificate checks (tests only). Default: false.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

func (t TLSConfig) set() bool {
	return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "" || t.InsecureSkipVerify
}

// ClientConfig is how to reach the Consul agent. Every field is optional; unset ones
// come from the CONSUL_HTTP_* environment variables like the consul CLI.
type ClientConfig struct {
	// Address is host:port, or a URL with http:// or https://. Default:
	// $CONSUL_HTTP_ADDR, else 127.0.0.1:8500.
	Address string `yaml:"address"`
	// Scheme is http or https. Default: http, https when $CONSUL_HTTP_SSL=true or any
	// TLS field is set.
	Scheme string `yaml:"scheme"`
	// Datacenter to query. Default: the agent's own.
	Datacenter string `yaml:"datacenter"`
	// Token is the ACL token. Default: $CONSUL_HTTP_TOKEN.
	Token string `yaml:"token"`
	// TokenFile holds the ACL token. Default: $CONSUL_HTTP_TOKEN_FILE.
	TokenFile string `yaml:"token_file"`
	// TLS settings.
	TLS TLSConfig `yaml:"tls"`
}

// Validate reports every problem at once.
func (c ClientConfig) Validate() error {
	var errs []error
	switch c.Scheme {
	case "", "http", "https":
	default:
		errs = append(errs, fmt.Errorf("%w: scheme %q: want http or https", ErrConfig, c.Scheme))
	}
	if c.Token != "" && c.TokenFile != "" {
		errs = append(errs, fmt.Errorf("%w: set token or token_file, not both", ErrConfig))
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, fmt.Errorf("%w: tls.cert_file and tls.key_file must be set together", ErrConfig))
	}
	return errors.Join(errs...)
}

// APIConfig returns the consul/api configuration: environment defaults overridden
// by the explicit fields.
func (c ClientConfig) APIConfig() (*api.Config, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	cfg := api.DefaultConfig()
	if c.Address != "" {
		cfg.Address = c.Address
	}
	if c.Scheme != "" {
		cfg.Scheme = c.Scheme
	} else if c.TLS.set() {
		cfg.Scheme = "https"
	}
	if c.Datacenter != "" {
		cfg.Datacenter = c.Datacenter
	}
	if c.Token != "" {
		cfg.Token, cfg.TokenFile = c.Token, ""
	}
	if c.TokenFile != "" {
		cfg.TokenFile, cfg.Token = c.TokenFile, ""
	}
	if c.TLS.CAFile != "" {
		cfg.TLSConfig.CAFile = c.TLS.CAFile
	}
	if c.TLS.CertFile != "" {
		cfg.TLSConfig.CertFile, cfg.TLSConfig.KeyFile = c.TLS.CertFile, c.TLS.KeyFile
	}
	if c.TLS.ServerName != "" {
		cfg.TLSConfig.Address = c.TLS.ServerName
	}
	if c.TLS.InsecureSkipVerify {
		cfg.TLSConfig.InsecureSkipVerify = true
	}
	return cfg, nil
}

// NewClient builds a Consul API client from c.
func (c ClientConfig) NewClient() (*api.Client, error) {
	cfg, err := c.APIConfig()
	if err != nil {
		return nil, err
	}
	cl, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return cl, nil
}

// ConsulConfig selects one pool's instances in Consul.
type ConsulConfig struct {
	// Client is how to reach the agent.
	Client ClientConfig `yaml:"client"`
	// Service is the Consul service name (required).
	Service string `yaml:"service"`
	// Tag filters instances to those carrying it. Default: none (all instances).
	Tag string `yaml:"tag"`
	// WaitTime is the longest a blocking query waits for a change. Default: 30s.
	WaitTime time.Duration `yaml:"wait_time"`
	// BackoffMin is the first retry delay after an error. Default: 200ms.
	BackoffMin time.Duration `yaml:"backoff_min"`
	// BackoffMax caps the retry delay. Default: 10s.
	BackoffMax time.Duration `yaml:"backoff_max"`
	// AllowStale lets any server answer (faster, possibly slightly behind). Default: false.
	AllowStale bool `yaml:"allow_stale"`
	// EmptyGrace: when the first answer after an outage or an index reset says the
	// service has no passing instance although the last set had some, the last set
	// stays in force this long (an agent that restarts re-registers its services
	// with critical checks until they first run). An empty set seen while Consul
	// was healthy applies at once. Default: 5s; negative disables.
	EmptyGrace time.Duration `yaml:"empty_grace"`
}

// Defaults for ConsulConfig.
const (
	DefaultWaitTime   = 30 * time.Second
	DefaultBackoffMin = 200 * time.Millisecond
	DefaultBackoffMax = 10 * time.Second
	DefaultEmptyGrace = 5 * time.Second
)

// WithDefaults fills unset durations.
func (c ConsulConfig) WithDefaults() ConsulConfig {
	if c.WaitTime == 0 {
		c.WaitTime = DefaultWaitTime
	}
	if c.BackoffMin == 0 {
		c.BackoffMin = DefaultBackoffMin
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = DefaultBackoffMax
	}
	if c.EmptyGrace == 0 {
		c.EmptyGrace = DefaultEmptyGrace
	}
	return c
}

// Validate reports every problem at once.
func (c ConsulConfig) Validate() error {
	var errs []error
	if err := c.Client.Validate(); err != nil {
		errs = append(errs, err.(interface{ Unwrap() []error }).Unwrap()...)
	}
	if c.Service == "" {
		errs = append(errs, fmt.Errorf("%w: service name is required", ErrConfig))
	}
	if c.WaitTime < 0 || c.WaitTime > 10*time.Minute {
		errs = append(errs, fmt.Errorf("%w: wait_time %v: want between 0 and 10m", ErrConfig, c.WaitTime))
	}
	if c.BackoffMin < 0 || c.BackoffMax < 0 || (c.BackoffMax > 0 && c.BackoffMin > c.BackoffMax) {
		errs = append(errs, fmt.Errorf("%w: backoff_min %v, backoff_max %v: want 0 <= min <= max", ErrConfig, c.BackoffMin, c.BackoffMax))
	}
	return errors.Join(errs...)
}

// Consul watches the passing instances of one Consul service.
type Consul struct {
	cfg    ConsulConfig
	client *api.Client
	log    *slog.Logger
	attrs  metric.MeasurementOption

	staleness metric.Float64ObservableGauge
	meter     metric.Meter
	errorsCtr metric.Int64Counter
	updates   metric.Int64Counter

	// jitter returns a value in [0,1); injected for tests.
	jitter func() float64
	now    func() time.Time

	mu      sync.Mutex
	lastOK  time.Time // last successful answer
	failing bool      // the latest attempt failed
}

var _ Discoverer = (*Consul)(nil)

// NewConsul validates cfg and builds the watcher. logger and mp may be nil.
func NewConsul(cfg ConsulConfig, logger *slog.Logger, mp metric.MeterProvider) (*Consul, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cl, err := cfg.Client.NewClient()
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	m := mp.Meter("github.com/tfgate/tfgate/gateway/discovery")
	c := &Consul{
		cfg:    cfg,
		client: cl,
		log:    logger.With("consul_service", cfg.Service, "consul_tag", cfg.Tag),
		attrs: metric.WithAttributes(
			attribute.String("service", cfg.Service), attribute.String("tag", cfg.Tag)),
		meter:  m,
		jitter: rand.Float64,
		now:    time.Now,
	}
	if c.staleness, err = m.Float64ObservableGauge("tfgate.discovery.staleness",
		metric.WithUnit("s"),
		metric.WithDescription("Seconds since Consul last confirmed this pool's endpoints, while it is failing; 0 when current.")); err != nil {
		return nil, err
	}
	if c.errorsCtr, err = m.Int64Counter("tfgate.discovery.errors",
		metric.WithDescription("Failed Consul queries.")); err != nil {
		return nil, err
	}
	if c.updates, err = m.Int64Counter("tfgate.discovery.updates",
		metric.WithDescription("Endpoint sets sent after a change.")); err != nil {
		return nil, err
	}
	return c, nil
}

// Staleness is how long the view has gone unconfirmed: 0 while the latest query
// succeeded, else the time since the last success (or since Run started).
func (c *Consul) Staleness() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.failing {
		return 0
	}
	return c.now().Sub(c.lastOK)
}

func (c *Consul) record(ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failing = !ok
	if ok {
		c.lastOK = c.now()
	}
}

// Run watches the service until ctx is cancelled.
func (c *Consul) Run(ctx context.Context, updates chan<- []Endpoint) error {
	c.mu.Lock()
	c.lastOK = c.now()
	c.mu.Unlock()
	reg, err := c.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveFloat64(c.staleness, c.Staleness().Seconds(), c.attrs)
		return nil
	}, c.staleness)
	if err != nil {
		return err
	}
	defer func() { _ = reg.Unregister() }()

	var (
		index    uint64
		last     []Endpoint
		sent     bool
		failures int
		// recovering: the last answer was an error or the index went back, so
		// the next answer may come from an agent that has just restarted.
		recovering bool
		holdUntil  time.Time // while set, an empty answer is not applied
	)
	for {
		wait := c.cfg.WaitTime
		if !holdUntil.IsZero() {
			wait = max(min(wait, holdUntil.Sub(c.now())), 10*time.Millisecond)
		}
		entries, meta, err := c.query(ctx, index, wait)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			c.record(false)
			c.errorsCtr.Add(ctx, 1, c.attrs)
			d := c.backoff(failures)
			failures++
			recovering = true
			// The agent may come back restarted with a lower index: blocking on
			// the old one could hold the next query for the full wait. Ask for
			// the current state without blocking instead.
			index = 0
			c.log.Warn("consul query failed; keeping last endpoints",
				"err", err, "retry_in", d, "endpoints", len(last), "stale_for", c.Staleness())
			if !sleep(ctx, d) {
				return nil
			}
			continue
		}
		c.record(true)
		failures = 0
		switch {
		case meta.LastIndex < index:
			// The index went backwards (server restarted or state restored):
			// start over from this answer, whose data is current. (Resetting to
			// 0 would only re-fetch the same answer at once.)
			c.log.Info("consul index went backwards; resetting watch", "was", index, "now", meta.LastIndex)
			index = meta.LastIndex
			recovering = true
		case meta.LastIndex == index && sent && holdUntil.IsZero():
			recovering = false // Consul answers and nothing changed
			continue           // timed out with no change
		default:
			index = meta.LastIndex
		}
		if index == 0 {
			// Consul: an index of 0 must not be used for blocking; 1 is safe.
			index = 1
		}
		eps := fromEntries(entries)
		if len(eps) == 0 && len(last) > 0 && c.cfg.EmptyGrace > 0 && (recovering || !holdUntil.IsZero()) {
			if holdUntil.IsZero() {
				holdUntil = c.now().Add(c.cfg.EmptyGrace)
				c.log.Warn("consul reports no passing instance right after recovering; keeping last endpoints for the grace period",
					"grace", c.cfg.EmptyGrace, "endpoints", len(last))
			}
			recovering = false
			if c.now().Before(holdUntil) {
				continue
			}
		}
		holdUntil, recovering = time.Time{}, false
		if sent && Equal(eps, last) {
			continue
		}
		select {
		case updates <- eps:
		case <-ctx.Done():
			return nil
		}
		c.updates.Add(ctx, 1, c.attrs)
		c.log.Debug("consul endpoints changed", "endpoints", len(eps), "index", index)
		last, sent = eps, true
	}
}

func (c *Consul) query(ctx context.Context, index uint64, wait time.Duration) ([]*api.ServiceEntry, *api.QueryMeta, error) {
	// The server adds up to wait/16 of jitter; beyond that a silent connection is dead.
	qctx, cancel := context.WithTimeout(ctx, wait+wait/16+5*time.Second)
	defer cancel()
	q := &api.QueryOptions{WaitIndex: index, WaitTime: wait, AllowStale: c.cfg.AllowStale}
	entries, meta, err := c.client.Health().Service(c.cfg.Service, c.cfg.Tag, true, q.WithContext(qctx))
	if err != nil {
		return nil, nil, fmt.Errorf("consul health service %q tag %q: %w", c.cfg.Service, c.cfg.Tag, err)
	}
	return entries, meta, nil
}

// backoff is exponential with full jitter in [d/2, d).
func (c *Consul) backoff(failures int) time.Duration {
	d := c.cfg.BackoffMin
	for i := 0; i < failures && d < c.cfg.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, c.cfg.BackoffMax)
	return d/2 + time.Duration(c.jitter()*float64(d/2))
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func fromEntries(entries []*api.ServiceEntry) []Endpoint {
	eps := make([]Endpoint, 0, len(entries))
	for _, e := range entries {
		if e.Service == nil {
			continue
		}
		host := e.Service.Address
		if host == "" && e.Node != nil {
			host = e.Node.Address
		}
		if host == "" || e.Service.Port <= 0 {
			continue
		}
		id := e.Service.ID
		if e.Node != nil {
			id = e.Node.Node + "/" + id
		}
		eps = append(eps, Endpoint{
			Addr:      net.JoinHostPort(host, strconv.Itoa(e.Service.Port)),
			Tags:      e.Service.Tags,
			ID:        id,
			ServiceID: e.Service.ID,
		})
	}
	return normalize(eps)
}
