package route

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tfgate/tfgate/gateway/batching"
	"github.com/tfgate/tfgate/gateway/hosts"
)

// Defaults applied before a config file is decoded over them.
const (
	// DefaultTimeout bounds one backend call when neither the model nor the
	// config's defaults set a timeout.
	DefaultTimeout = 5 * time.Second
	// DefaultMaxInstances is the default per-request instance limit.
	DefaultMaxInstances = 1024
	// DefaultMaxTextBytes is the default limit on one instance's text, in bytes.
	DefaultMaxTextBytes = 64 << 10
	// DefaultMaxRoutingKeyBytes is the default routing key limit, in bytes.
	DefaultMaxRoutingKeyBytes = 256
	// DefaultMaxFeatures is the default limit on features (numeric plus
	// categorical) in one instance.
	DefaultMaxFeatures = 1024
)

// ErrInvalidConfig is wrapped by every [ValidationError].
var ErrInvalidConfig = errors.New("invalid routing config")

// Config is one routing config file.
type Config struct {
	// Backends configures the TF Serving host pools (a hosts.Config). Read at
	// startup; a reload that changes it is reported, not applied. Default: absent,
	// allowed only when the gateway is given its backends in code (tests).
	Backends yaml.Node `yaml:"backends"`
	// Hosts is Backends decoded and validated (zero when Backends is absent).
	Hosts hosts.Config `yaml:"-"`
	// Defaults apply to every model that does not set its own value.
	Defaults Defaults `yaml:"defaults"`
	// Limits bound what one request may carry.
	Limits Limits `yaml:"limits"`
	// Models by name. Required: at least one.
	Models map[string]*Model `yaml:"models"`
	// Ensembles by name: names callers use like models, each calling several
	// models and combining their outputs (ensemble.go). Default: none.
	Ensembles map[string]*Ensemble `yaml:"ensembles"`
	// Placement is the placement policy and the gateway's cold-start settings
	// (placement.go), used with --placement. Default: every default.
	Placement Placement `yaml:"placement"`

	// File is the path the config was read from (for messages); not decoded.
	File string `yaml:"-"`
	// Hash identifies the file's content (FNV-1a 64 of the bytes); not decoded.
	Hash uint64 `yaml:"-"`

	knownPools map[string]bool
	pinned     map[string][]int64 // MemberVersions
}

// Defaults are per-model settings inherited by models that leave them unset.
type Defaults struct {
	// Pools are the host pools, in preference order. Default: none (then every
	// model must name its pools).
	Pools []string `yaml:"pools"`
	// Timeout bounds one backend call. Default: 5s.
	Timeout Duration `yaml:"timeout"`
}

// Limits bound one request. Exceeding one is INVALID_ARGUMENT.
type Limits struct {
	// MaxInstances per request. Default: 1024.
	MaxInstances int `yaml:"max_instances"`
	// MaxTextBytes per instance text. Default: 65536.
	MaxTextBytes int `yaml:"max_text_bytes"`
	// MaxRoutingKeyBytes. Default: 256.
	MaxRoutingKeyBytes int `yaml:"max_routing_key_bytes"`
	// MaxFeatures per instance (numeric plus categorical). Default: 1024.
	MaxFeatures int `yaml:"max_features"`
}

// Model is one model's routing.
type Model struct {
	// Default is the route for requests that name no version or label and find no
	// routable experiment arm: a version number ("7") or a label name. Default: none.
	Default string `yaml:"default"`
	// Labels map label names to versions. Default: none.
	Labels map[string]Version `yaml:"labels"`
	// Experiment splits default-route traffic across arms. Default: none.
	Experiment *Experiment `yaml:"experiment"`
	// Shadow also sends a sample of the routed traffic to another version, to
	// compare outputs (shadow.go). Default: none.
	Shadow *Shadow `yaml:"shadow"`
	// Pools are the host pools, in preference order. Default: defaults.pools.
	Pools []string `yaml:"pools"`
	// Timeout bounds one backend call. Default: defaults.timeout.
	Timeout Duration `yaml:"timeout"`
	// Batching is the model's gateway-side batching block, decoded over
	// batching.DefaultConfig() into BatchingConfig. Default: absent, batching off.
	Batching yaml.Node `yaml:"batching"`

	// BatchingConfig is Batching decoded and validated; zero (off) when absent.
	BatchingConfig batching.Config `yaml:"-"`

	// Name is the model's key in models; set by Parse.
	Name string `yaml:"-"`
	// DefaultVersion is Default parsed as a version (0 when Default is a label).
	DefaultVersion int64 `yaml:"-"`
}

// NamedVersions are the versions the model's default, labels, experiment arms
// and shadow name (after Parse), ascending, without duplicates.
func (m *Model) NamedVersions() []int64 {
	var vs []int64
	if m.DefaultVersion > 0 {
		vs = append(vs, m.DefaultVersion)
	}
	for _, v := range m.Labels {
		vs = append(vs, v.N)
	}
	if m.Experiment != nil {
		for _, a := range m.Experiment.Arms {
			vs = append(vs, a.Version.N)
		}
	}
	if m.Shadow != nil && m.Shadow.Version.N > 0 {
		vs = append(vs, m.Shadow.Version.N)
	}
	slices.Sort(vs)
	return slices.Compact(vs)
}

// Experiment is a weighted split of a model's default traffic.
type Experiment struct {
	// Name identifies the experiment in responses. Required.
	Name string `yaml:"name"`
	// Salt seeds sticky assignment; change it to re-randomize. Default:
	// "<model>/<name>", so different experiments never correlate.
	Salt string `yaml:"salt"`
	// Arms in order; each owns a contiguous share of the bucket space. Required.
	Arms []Arm `yaml:"arms"`
}

// Arm is one branch of an experiment.
type Arm struct {
	// Name appears in responses. Required, unique within the experiment.
	Name string `yaml:"name"`
	// Version the arm routes to. Required.
	Version Version `yaml:"version"`
	// Weight is the arm's relative share; >= 0, and the arms' sum > 0. Required.
	Weight float64 `yaml:"weight"`
}

// Version is a model version as written in the config: a positive integer. The
// raw text is kept so validation can name what was wrong.
type Version struct {
	Raw string
	N   int64
}

// UnmarshalYAML keeps the scalar's text; Validate parses it.
func (v *Version) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		v.Raw = fmt.Sprintf("<%s at line %d>", kindName(n.Kind), n.Line)
		return nil
	}
	v.Raw = n.Value
	return nil
}

// MarshalYAML writes the raw text.
func (v Version) MarshalYAML() (any, error) { return v.Raw, nil }

func (v *Version) parse() error {
	n, err := parseVersion(v.Raw)
	v.N = n
	return err
}

func parseVersion(s string) (int64, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("version %q is not a positive integer (write it like 7)", s)
	}
	return n, nil
}

// Duration is a time.Duration written like "500ms" or "2s".
type Duration struct {
	Raw string
	D   time.Duration
}

// UnmarshalYAML keeps the scalar's text; Validate parses it.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		d.Raw = fmt.Sprintf("<%s at line %d>", kindName(n.Kind), n.Line)
		return nil
	}
	d.Raw = n.Value
	return nil
}

// MarshalYAML writes the raw text.
func (d Duration) MarshalYAML() (any, error) { return d.Raw, nil }

func (d *Duration) parse() error {
	if d.Raw == "" {
		return nil
	}
	v, err := time.ParseDuration(strings.TrimSpace(d.Raw))
	if err != nil || v <= 0 {
		return fmt.Errorf("duration %q is not a positive duration (write it like 500ms or 2s)", d.Raw)
	}
	d.D = v
	return nil
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "sequence"
	case yaml.AliasNode:
		return "alias"
	case yaml.DocumentNode:
		return "document"
	}
	return "scalar"
}

// SpecChecker reports whether a model version has a valid preprocessing spec:
// nil if it does, else an error saying why not. Parse uses it to reject labels,
// defaults and arms on versions without one.
type SpecChecker func(model string, version int64) error

// Load reads and parses the config file at path. specs may be nil to skip the
// preprocessing checks.
func Load(path string, specs SpecChecker) (*Config, error) {
	return LoadWith(path, Checks{Specs: specs})
}

// LoadWith is Load with every check of [Checks].
func LoadWith(path string, ck Checks) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read routing config: %w", err)
	}
	return ParseWith(path, b, ck)
}

// Parse decodes data (named file in messages) over the defaults, rejecting unknown
// fields, and validates it; see [Config.Validate]. specs may be nil.
func Parse(file string, data []byte, specs SpecChecker) (*Config, error) {
	return ParseWith(file, data, Checks{Specs: specs})
}

// ParseWith is Parse with every check of [Checks] (the class lists of
// ensembles' members besides the specs).
func ParseWith(file string, data []byte, ck Checks) (*Config, error) {
	c := &Config{File: file, Hash: Hash(data)}
	c.Defaults.Timeout = Duration{Raw: DefaultTimeout.String(), D: DefaultTimeout}
	c.Limits = Limits{
		MaxInstances:       DefaultMaxInstances,
		MaxTextBytes:       DefaultMaxTextBytes,
		MaxRoutingKeyBytes: DefaultMaxRoutingKeyBytes,
		MaxFeatures:        DefaultMaxFeatures,
	}
	ve := &ValidationError{File: file}
	report := func(p string) { ve.Problems = append(ve.Problems, p) }
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			ve.add("", "the file is empty; it needs at least a models: mapping")
		} else {
			ve.add("", "%s", strings.TrimPrefix(err.Error(), "yaml: "))
		}
		return nil, ve
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		ve.add("", "the file holds more than one YAML document; put everything in one")
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind != yaml.MappingNode {
		ve.add("", "line %d: the top level must be a mapping with backends, defaults, limits and models", root.Line)
		return nil, ve
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if seen[k.Value] {
			ve.add("", "line %d: top-level field %q is set twice", k.Line, k.Value)
			continue
		}
		seen[k.Value] = true
		switch k.Value {
		case "backends":
			c.Backends = *v
		case "defaults":
			strictDecode(v, &c.Defaults, "defaults: ", report)
		case "limits":
			strictDecode(v, &c.Limits, "limits: ", report)
		case "models":
			c.Models = decodeModels(v, report)
		case "ensembles":
			c.Ensembles = decodeEnsembles(v, report)
		case "placement":
			strictDecode(v, &c.Placement, "placement: ", report)
		default:
			ve.add("", "line %d: unknown top-level field %q (known: backends, defaults, ensembles, limits, models, placement)", k.Line, k.Value)
		}
	}
	c.validate(ve, ck)
	c.finishPlacement(ve)
	if len(ve.Problems) > 0 {
		return nil, ve
	}
	return c, nil
}

func decodeModels(n *yaml.Node, report func(string)) map[string]*Model {
	return decodeNamed(n, "model", "models must be a mapping from model name to its routing", report,
		func(v *yaml.Node, where string) *Model {
			m := &Model{}
			strictDecode(v, m, where, report)
			return m
		})
}

// decodeNamed decodes a mapping from names to entries of one kind ("model",
// "ensemble"), reporting a node that is not a mapping (with notMapping) and a
// name listed twice; an empty entry decodes to nil, the others with decode.
func decodeNamed[T any](n *yaml.Node, kind, notMapping string, report func(string), decode func(v *yaml.Node, where string) *T) map[string]*T {
	if n.Kind != yaml.MappingNode {
		report(fmt.Sprintf("line %d: %s", n.Line, notMapping))
		return nil
	}
	out := make(map[string]*T, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		where := fmt.Sprintf("%s %q: ", kind, k.Value)
		if _, dup := out[k.Value]; dup {
			report(fmt.Sprintf("%sline %d: the %s is listed twice", where, k.Line, kind))
			continue
		}
		if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
			out[k.Value] = nil
			continue
		}
		out[k.Value] = decode(v, where)
	}
	return out
}

// Validate checks the config as a whole and returns a [*ValidationError] listing
// every problem, or nil. It also fills in parsed and inherited values (Name,
// DefaultVersion, Version.N, Duration.D, pools and timeouts from defaults, salts).
func (c *Config) Validate() error {
	ve := &ValidationError{File: c.File}
	c.validate(ve, Checks{})
	if len(ve.Problems) > 0 {
		return ve
	}
	return nil
}

// ModelNames returns the configured model names, sorted.
func (c *Config) ModelNames() []string {
	names := make([]string, 0, len(c.Models))
	for n := range c.Models {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Hash is FNV-1a 64 of b: how the gateway tells a changed config file from a
// touched one.
func Hash(b []byte) uint64 {
	h := uint64(fnvOffset)
	for _, c := range b {
		h ^= uint64(c)
		h *= fnvPrime
	}
	return h
}

// ValidationError lists every problem found in one config file.
type ValidationError struct {
	File     string
	Problems []string
}

func (e *ValidationError) add(model, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if model != "" {
		msg = fmt.Sprintf("model %q: %s", model, msg)
	}
	e.Problems = append(e.Problems, msg)
}

// Error lists the problems, one per line, each prefixed with the file.
func (e *ValidationError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d problem(s)", e.File, len(e.Problems))
	for _, p := range e.Problems {
		fmt.Fprintf(&b, "\n  %s: %s", e.File, p)
	}
	return b.String()
}

// Unwrap makes errors.Is(err, ErrInvalidConfig) true.
func (e *ValidationError) Unwrap() error { return ErrInvalidConfig }
