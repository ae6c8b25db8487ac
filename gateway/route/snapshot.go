package route

import (
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tfgate/tfgate/gateway/batching"
)

// Sentinel errors returned (wrapped in a [*RouteError]) by [Snapshot.Resolve].
var (
	// ErrUnknownModel: the model is not in the routing config.
	ErrUnknownModel = errors.New("unknown model")
	// ErrUnknownLabel: the model has no such label.
	ErrUnknownLabel = errors.New("unknown version label")
	// ErrNotRoutable: the label, default or every experiment arm points at a
	// version that cannot take traffic now (no spec, or no host has it AVAILABLE).
	ErrNotRoutable = errors.New("no routable version")
	// ErrNoDefaultRoute: the request named no version or label and the model has
	// neither a default nor an experiment.
	ErrNoDefaultRoute = errors.New("no default route")
)

// RouteError says which model and route failed to resolve, and why.
type RouteError struct {
	Model  string
	What   string // e.g. `label "canary" -> version 8`
	Reason string
	Err    error // one of the sentinels above
}

func (e *RouteError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "model %q", e.Model)
	if e.What != "" {
		b.WriteString(": ")
		b.WriteString(e.What)
	}
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	if e.Reason != "" {
		b.WriteString(": ")
		b.WriteString(e.Reason)
	}
	return b.String()
}

func (e *RouteError) Unwrap() error { return e.Err }

// Kind says how a route's version was chosen.
type Kind uint8

const (
	KindVersion Kind = iota + 1
	KindLabel
	KindExperiment
	KindDefault
)

// Target is what a request asked for: Version > 0, else Label != "", else the
// model's default route.
type Target struct {
	Version int64
	Label   string
}

// Route is a resolved target.
type Route struct {
	Version    int64
	Kind       Kind
	Arm        string // set for KindExperiment
	Experiment string // set for KindExperiment
	Label      string // the label used, for KindLabel (and KindDefault via a label)
}

// State is what the world says about a model version when a snapshot is built.
type State interface {
	// SpecStatus is nil when the gateway holds a valid, signature-checked
	// preprocessing spec for the version, else why not.
	SpecStatus(model string, version int64) error
	// AvailableHosts are the hosts reporting the version AVAILABLE.
	AvailableHosts(model string, version int64) []string
	// Versions lists versions known outside the config (e.g. the version
	// directories under the model root), so introspection can list every version
	// a caller may pin, not only those the config names.
	Versions(model string) []int64
}

// VersionStatus is one referenced version's routability, for introspection.
type VersionStatus struct {
	Version  int64
	Routable bool
	Reason   string // empty when routable
	Hosts    []string
	HasSpec  bool
}

// ArmStatus is one arm's state, for introspection.
type ArmStatus struct {
	Name           string
	Version        int64
	Weight         float64
	EffectiveShare float64
	Routable       bool
	Reason         string
}

type target struct {
	version int64
	label   string
	err     error // non-nil when not routable
}

type experiment struct {
	name, salt string
	arms       []ArmStatus
	full       []uint32 // bucket ends over all arms, by configured weight
	live       []uint32 // bucket ends over routable arms only
	anyLive    bool
}

// ModelRoutes is one model's precomputed routing.
type ModelRoutes struct {
	Name     string
	Pools    []string
	Timeout  time.Duration
	Batching batching.Config // zero (disabled) without a batching block
	Default  string
	Labels   map[string]int64
	Versions []VersionStatus // every version the config references or State knows, ascending
	ExpName  string

	labels map[string]target
	def    target // err set when the default route cannot resolve
	// noDefault: no default and no experiment (def unset); Resolve without a
	// version or label fails with ErrNoDefaultRoute.
	noDefault bool
	exp       *experiment
}

// Arms lists the experiment's arms (nil without an experiment).
func (m *ModelRoutes) Arms() []ArmStatus {
	if m.exp == nil {
		return nil
	}
	return m.exp.arms
}

// Snapshot is an immutable routing table for all models.
type Snapshot struct {
	// Generation counts successful config loads.
	Generation uint64
	// Config is the config the snapshot was built from.
	Config    *Config
	models    map[string]*ModelRoutes
	ensembles map[string]*EnsembleRoutes
	rand      func() uint64
}

// BuildOptions tune [Build].
type BuildOptions struct {
	// Rand is the source of keyless arm assignment. Default: math/rand/v2.Uint64.
	Rand func() uint64
}

// Build precomputes routing for a validated config against the current state.
func Build(cfg *Config, st State, gen uint64, opts BuildOptions) *Snapshot {
	s := &Snapshot{Generation: gen, Config: cfg, models: make(map[string]*ModelRoutes, len(cfg.Models)), rand: opts.Rand}
	if s.rand == nil {
		s.rand = rand.Uint64
	}
	noHost := noHostReasons{}
	for name, m := range cfg.Models {
		s.models[name] = buildModel(m, st, cfg.MemberVersions(name), noHost)
	}
	if len(cfg.Ensembles) > 0 {
		s.ensembles = make(map[string]*EnsembleRoutes, len(cfg.Ensembles))
		for name, e := range cfg.Ensembles {
			s.ensembles[name] = buildEnsemble(e, s.models)
		}
	}
	return s
}

// noHostReasons interns the "no host in pools [...]" reason per pool list: at
// 50,000 models most versions of a rebuild have no host (placement leaves them
// unplaced), and one string per version was a third of a rebuild's garbage.
type noHostReasons map[string]string

func (r noHostReasons) get(pools []string) string {
	key := ""
	if len(pools) == 1 {
		key = pools[0]
	} else {
		key = strings.Join(pools, "\x00")
	}
	if s, ok := r[key]; ok {
		return s
	}
	s := "no host in pools [" + strings.Join(pools, ", ") + "] reports it AVAILABLE"
	r[key] = s
	return s
}

// buildModel precomputes m's routes; pinned are versions ensemble members pin,
// whose status is listed with the others.
func buildModel(m *Model, st State, pinned []int64, noHost noHostReasons) *ModelRoutes {
	mr := &ModelRoutes{
		Name:    m.Name,
		Pools:   m.Pools,
		Timeout: m.Timeout.D,
		Default: m.Default,
	}
	// Maps only for models with labels: reads of a nil map find nothing, and at
	// fleet scale (50,000 models, most without labels) two empty maps per model
	// were kept in every snapshot.
	if len(m.Labels) > 0 {
		mr.Labels = make(map[string]int64, len(m.Labels))
		mr.labels = make(map[string]target, len(m.Labels))
	}
	mr.Batching = m.BatchingConfig
	// The versions' statuses, in the order first asked for; few per model, so a
	// slice searched linearly (a map and a pointer per version cost more).
	vs := make([]VersionStatus, 0, 1)
	status := func(v int64) VersionStatus {
		for _, s := range vs {
			if s.Version == v {
				return s
			}
		}
		s := VersionStatus{Version: v, Hosts: st.AvailableHosts(m.Name, v)}
		specErr := st.SpecStatus(m.Name, v)
		s.HasSpec = specErr == nil
		switch {
		case specErr != nil && len(s.Hosts) == 0:
			s.Reason = "no usable preprocessing spec: " + specErr.Error() + "; " + noHost.get(m.Pools)
		case specErr != nil:
			s.Reason = "no usable preprocessing spec: " + specErr.Error()
		case len(s.Hosts) == 0:
			s.Reason = noHost.get(m.Pools)
		}
		s.Routable = s.Reason == ""
		vs = append(vs, s)
		return s
	}
	for l, v := range m.Labels {
		mr.Labels[l] = v.N
		t := target{version: v.N, label: l}
		if s := status(v.N); !s.Routable {
			t.err = &RouteError{Model: m.Name, What: fmt.Sprintf("label %q -> version %d", l, v.N), Reason: s.Reason, Err: ErrNotRoutable}
		}
		mr.labels[l] = t
	}
	if e := m.Experiment; e != nil {
		x := &experiment{name: e.Name, salt: e.Salt, arms: make([]ArmStatus, len(e.Arms))}
		for i, a := range e.Arms {
			s := status(a.Version.N)
			x.arms[i] = ArmStatus{Name: a.Name, Version: a.Version.N, Weight: a.Weight, Routable: s.Routable && a.Weight > 0, Reason: s.Reason}
			if a.Weight <= 0 && s.Routable {
				x.arms[i].Reason = "weight is 0"
			}
		}
		x.full = cumulative(e.Arms, func(int) bool { return true })
		x.live = cumulative(e.Arms, func(i int) bool { return x.arms[i].Routable })
		prev := uint32(0)
		for i := range x.arms {
			if x.arms[i].Routable {
				x.anyLive = true
				x.arms[i].EffectiveShare = float64(x.live[i]-prev) / Buckets
			}
			prev = x.live[i]
		}
		mr.exp = x
		mr.ExpName = e.Name
	}
	switch {
	case m.DefaultVersion > 0:
		mr.def = target{version: m.DefaultVersion}
		if s := status(m.DefaultVersion); !s.Routable {
			mr.def.err = &RouteError{Model: m.Name, What: fmt.Sprintf("default version %d", m.DefaultVersion), Reason: s.Reason, Err: ErrNotRoutable}
		}
	case m.Default != "":
		lt := mr.labels[m.Default]
		mr.def = lt
		if lt.err != nil {
			mr.def.err = &RouteError{Model: m.Name, What: fmt.Sprintf("default label %q -> version %d", m.Default, lt.version), Reason: lt.err.(*RouteError).Reason, Err: ErrNotRoutable}
		}
	case mr.exp != nil:
		var why []string
		for _, a := range mr.exp.arms {
			why = append(why, fmt.Sprintf("arm %q (version %d): %s", a.Name, a.Version, a.Reason))
		}
		mr.def.err = &RouteError{Model: m.Name, What: fmt.Sprintf("experiment %q", mr.exp.name), Reason: "no arm is routable and there is no default to fall back on: " + strings.Join(why, "; "), Err: ErrNotRoutable}
	default:
		mr.noDefault = true // its error is made when asked for (most fleet models)
	}
	for _, v := range st.Versions(m.Name) {
		status(v)
	}
	for _, v := range pinned {
		status(v)
	}
	slices.SortFunc(vs, func(a, b VersionStatus) int { return cmp.Compare(a.Version, b.Version) })
	mr.Versions = slices.Clip(vs)
	return mr
}

// Model returns a model's routes.
func (s *Snapshot) Model(name string) (*ModelRoutes, bool) {
	m, ok := s.models[name]
	return m, ok
}

// Models returns every model's routes, sorted by name.
func (s *Snapshot) Models() []*ModelRoutes {
	out := make([]*ModelRoutes, 0, len(s.models))
	for _, m := range s.models {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b *ModelRoutes) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// AnyRoutable reports whether some version of some model is routable, and how
// many models the snapshot has. It stops at the first routable version.
func (s *Snapshot) AnyRoutable() (bool, int) {
	for _, m := range s.models {
		for _, v := range m.Versions {
			if v.Routable {
				return true, len(s.models)
			}
		}
	}
	return false, len(s.models)
}

// Resolve resolves a model's target. key makes experiment assignment sticky;
// empty means weighted random. It allocates only on error.
func (s *Snapshot) Resolve(model string, t Target, key string) (Route, *ModelRoutes, error) {
	m, ok := s.models[model]
	if !ok {
		return Route{}, nil, &RouteError{Model: model, Reason: "it is not in the routing config; ListRoutes shows the models served", Err: ErrUnknownModel}
	}
	r, err := m.resolve(t, key, s.rand)
	return r, m, err
}

func (m *ModelRoutes) resolve(t Target, key string, rnd func() uint64) (Route, error) {
	switch {
	case t.Version > 0:
		return Route{Version: t.Version, Kind: KindVersion}, nil
	case t.Label != "":
		lt, ok := m.labels[t.Label]
		if !ok {
			return Route{}, &RouteError{Model: m.Name, What: fmt.Sprintf("label %q", t.Label), Reason: "labels defined: " + m.labelList(), Err: ErrUnknownLabel}
		}
		if lt.err != nil {
			return Route{}, lt.err
		}
		return Route{Version: lt.version, Kind: KindLabel, Label: t.Label}, nil
	}
	if x := m.exp; x != nil && x.anyLive {
		var i int
		if key != "" {
			h := keyHash(x.salt, key)
			i = pick(x.full, uint32(h%Buckets))
			if i < 0 || !x.arms[i].Routable {
				i = pick(x.live, uint32(mix(h^golden)%Buckets))
			}
		} else {
			i = pick(x.live, uint32(rnd()%Buckets))
		}
		a := &x.arms[i]
		return Route{Version: a.Version, Kind: KindExperiment, Arm: a.Name, Experiment: x.name}, nil
	}
	if m.noDefault {
		return Route{}, &RouteError{Model: m.Name, Reason: "the request names no version or label, and the model has no default or experiment; name a version or one of its labels", Err: ErrNoDefaultRoute}
	}
	if m.def.err != nil {
		return Route{}, m.def.err
	}
	return Route{Version: m.def.version, Kind: KindDefault, Label: m.def.label}, nil
}

func (m *ModelRoutes) labelList() string {
	ls := make([]string, 0, len(m.Labels))
	for l := range m.Labels {
		ls = append(ls, strconv.Quote(l))
	}
	sort.Strings(ls)
	return listOrNone(ls)
}
