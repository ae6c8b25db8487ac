package route

import (
	"math"

	"gopkg.in/yaml.v3"

	"github.com/tfgate/tfgate/gateway/batching"
	"github.com/tfgate/tfgate/gateway/hosts"
	"sort"
	"strconv"
	"strings"
	"unicode"
)

func (c *Config) validate(ve *ValidationError, ck Checks) {
	specs := ck.Specs
	if err := c.Defaults.Timeout.parse(); err != nil {
		ve.add("", "defaults.timeout: %v", err)
	}
	lim := []struct {
		name string
		v    int
	}{
		{"limits.max_instances", c.Limits.MaxInstances},
		{"limits.max_text_bytes", c.Limits.MaxTextBytes},
		{"limits.max_routing_key_bytes", c.Limits.MaxRoutingKeyBytes},
		{"limits.max_features", c.Limits.MaxFeatures},
	}
	for _, l := range lim {
		if l.v <= 0 {
			ve.add("", "%s is %d; it must be positive (or left out for the default)", l.name, l.v)
		}
	}
	if err := checkPools("defaults.pools", c.Defaults.Pools); err != "" {
		ve.add("", "%s", err)
	}
	var knownPools map[string]bool
	if c.Backends.Kind != 0 {
		hc, err := hosts.DecodeNode(&c.Backends)
		if err != nil {
			ve.add("", "backends: %s", strings.ReplaceAll(err.Error(), "\n", "; "))
		} else {
			c.Hosts = hc
			knownPools = make(map[string]bool, len(hc.Pools))
			for p := range hc.Pools {
				knownPools[p] = true
			}
		}
	}
	c.knownPools = knownPools
	if len(c.Models) == 0 {
		ve.add("", "no models: add a models: mapping with at least one model")
		return
	}
	names := c.ModelNames()
	for _, name := range names {
		m := c.Models[name]
		if m == nil {
			ve.add(name, "empty model entry: give it at least pools, or remove it")
			continue
		}
		m.Name = name
		c.validateModel(ve, m, specs)
	}
	c.validateEnsembles(ve, ck)
}

func (c *Config) validateModel(ve *ValidationError, m *Model, specs SpecChecker) {
	name := m.Name
	if name == "" || strings.ContainsFunc(name, func(r rune) bool { return unicode.IsSpace(r) || r == '/' }) {
		ve.add(name, "model names must be non-empty, without spaces or slashes")
	}
	checkSpec := func(what string, v int64) {
		if specs == nil || v <= 0 {
			return
		}
		if err := specs(name, v); err != nil {
			ve.add(name, "%s: version %d has no usable preprocessing spec: %v", what, v, err)
		}
	}

	labels := make([]string, 0, len(m.Labels))
	for l := range m.Labels {
		labels = append(labels, l)
	}
	sort.Strings(labels)
	for _, l := range labels {
		v := m.Labels[l]
		if l == "" || strings.ContainsFunc(l, unicode.IsSpace) {
			ve.add(name, "label %q: label names must be non-empty, without spaces", l)
		} else if _, err := strconv.ParseInt(l, 10, 64); err == nil {
			ve.add(name, "label %q: a label name cannot be a number (it would read as a version)", l)
		}
		if err := v.parse(); err != nil {
			ve.add(name, "label %q: %v", l, err)
		} else {
			checkSpec("label "+strconv.Quote(l), v.N)
		}
		m.Labels[l] = v
	}

	m.DefaultVersion = 0
	if d := strings.TrimSpace(m.Default); d != "" {
		if isDigits(d) {
			n, err := parseVersion(d)
			if err != nil {
				ve.add(name, "default: %v", err)
			} else {
				m.DefaultVersion = n
				checkSpec("default", n)
			}
		} else if _, ok := m.Labels[d]; !ok {
			ve.add(name, "default label %q points nowhere: it is not in labels (defined: %s)", d, listOrNone(labels))
		}
		m.Default = d
	}

	if len(m.Pools) == 0 {
		m.Pools = c.Defaults.Pools
	}
	if len(m.Pools) == 0 {
		ve.add(name, "no pools: set pools on the model or defaults.pools")
	} else if err := checkPools("pools", m.Pools); err != "" {
		ve.add(name, "%s", err)
	} else if c.knownPools != nil {
		for _, p := range m.Pools {
			if !c.knownPools[p] {
				ve.add(name, "pool %q is not defined in backends.pools (defined: %s)", p, listOrNone(sortedKeys(c.knownPools)))
			}
		}
	}

	if m.Timeout.Raw == "" {
		m.Timeout = c.Defaults.Timeout
	} else if err := m.Timeout.parse(); err != nil {
		ve.add(name, "timeout: %v", err)
	}

	if e := m.Experiment; e != nil {
		validateExperiment(ve, m, e, checkSpec)
	}
	validateShadow(ve, m, checkSpec)

	m.BatchingConfig = batching.Config{}
	if m.Batching.Kind != 0 && !(m.Batching.Kind == yaml.ScalarNode && m.Batching.Tag == "!!null") {
		bc := batching.DefaultConfig()
		ok := true
		strictDecode(&m.Batching, &bc, "model "+quote(name)+": batching: ", func(p string) { ve.Problems = append(ve.Problems, p); ok = false })
		if ok {
			if err := bc.Validate(); err != nil {
				ve.add(name, "batching: %v", err)
			} else {
				m.BatchingConfig = bc
			}
		}
	}
}

func validateExperiment(ve *ValidationError, m *Model, e *Experiment, checkSpec func(string, int64)) {
	name := m.Name
	if strings.TrimSpace(e.Name) == "" {
		ve.add(name, "experiment: name is required (it is reported in every response)")
	}
	if e.Salt == "" {
		e.Salt = name + "/" + e.Name
	}
	if len(e.Arms) == 0 {
		ve.add(name, "experiment %q: no arms; add at least one arm with name, version and weight", e.Name)
		return
	}
	seen := make(map[string]int, len(e.Arms))
	var sum float64
	weightsOK := true
	for i := range e.Arms {
		a := &e.Arms[i]
		where := "experiment " + strconv.Quote(e.Name) + " arm " + strconv.Quote(a.Name)
		if a.Name == "" {
			where = "experiment " + strconv.Quote(e.Name) + " arm #" + strconv.Itoa(i+1)
			ve.add(name, "%s: name is required", where)
		} else if j, dup := seen[a.Name]; dup {
			ve.add(name, "%s: duplicate arm name (arms #%d and #%d); arm names must be unique", where, j+1, i+1)
		} else {
			seen[a.Name] = i
		}
		if a.Version.Raw == "" {
			ve.add(name, "%s: version is required", where)
		} else if err := a.Version.parse(); err != nil {
			ve.add(name, "%s: %v", where, err)
		} else {
			checkSpec(where, a.Version.N)
		}
		switch {
		case math.IsNaN(a.Weight) || math.IsInf(a.Weight, 0):
			ve.add(name, "%s: weight %v is not a finite number", where, a.Weight)
			weightsOK = false
		case a.Weight < 0:
			ve.add(name, "%s: weight %v is negative; weights must be >= 0", where, a.Weight)
			weightsOK = false
		default:
			sum += a.Weight
		}
	}
	if !weightsOK {
		return
	}
	if sum <= 0 {
		ve.add(name, "experiment %q: all arm weights are zero; give at least one arm a positive weight", e.Name)
		return
	}
	if math.IsInf(sum, 0) {
		ve.add(name, "experiment %q: arm weights overflow; use smaller numbers", e.Name)
		return
	}
	ends := cumulative(e.Arms, func(int) bool { return true })
	prev := uint32(0)
	for i, a := range e.Arms {
		if a.Weight > 0 && ends[i] == prev {
			ve.add(name, "experiment %q arm %q: weight %v is too small a share to get any of the %d buckets", e.Name, a.Name, a.Weight, Buckets)
		}
		prev = ends[i]
	}
}

func checkPools(field string, pools []string) string {
	seen := make(map[string]bool, len(pools))
	for _, p := range pools {
		if strings.TrimSpace(p) == "" {
			return field + ": empty pool name"
		}
		if seen[p] {
			return field + ": pool " + strconv.Quote(p) + " listed twice"
		}
		seen[p] = true
	}
	return ""
}

func isDigits(s string) bool {
	s = strings.TrimPrefix(s, "-")
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
