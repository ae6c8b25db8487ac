package route

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"gopkg.in/yaml.v3"
)

// Combiner says how an ensemble combines its members' predictions.
type Combiner string

// Combiners.
const (
	// CombineMean averages every class's score over the members that answered.
	CombineMean Combiner = "mean"
	// CombineWeightedMean averages with the members' weights.
	CombineWeightedMean Combiner = "weighted_mean"
	// CombineVote takes each member's top-1 class; the class most members chose
	// wins, ties going to the larger summed weight, then to the lower class index.
	CombineVote Combiner = "vote"
	// CombineEach combines nothing: the response carries every member's
	// predictions, named.
	CombineEach Combiner = "each"
)

// SharesClasses reports whether the combiner needs every member to score the
// same class list (mean, weighted_mean and vote do).
func (c Combiner) SharesClasses() bool { return c != CombineEach }

// Ensemble is a name callers use like a model: one Predict runs every member in
// parallel, each routed, preprocessed and batched as a direct call to its model
// would be, and combines their outputs (gateway/ensemble.go).
type Ensemble struct {
	// Members in order: the order in which combined scores are summed and
	// members are listed in responses. Required: at least one.
	Members []Member `yaml:"members"`
	// Combiner is mean, weighted_mean, vote or each. Required.
	Combiner Combiner `yaml:"combiner"`
	// RequireAll: the call fails unless every member answers. Default: true
	// when min_members is not set; cannot be true together with min_members.
	RequireAll *bool `yaml:"require_all"`
	// MinMembers: the call answers when at least this many members did, with
	// the response marked partial when some failed. Default: unset (require_all).
	MinMembers int `yaml:"min_members"`
	// Timeout bounds the whole call (every member runs within it). Default: the
	// longest timeout among the members' models.
	Timeout Duration `yaml:"timeout"`

	// Name is the ensemble's key in ensembles; set by Parse.
	Name string `yaml:"-"`
	// Need is how many members must answer: len(Members) under require_all,
	// else MinMembers; set by Parse.
	Need int `yaml:"-"`

	undecoded bool // the entry failed to decode: its problems are reported
}

// Member is one model an ensemble calls.
type Member struct {
	// Name identifies the member in responses, metrics, spans and errors.
	// Default: the model's name; set it when one model appears twice.
	Name string `yaml:"name"`
	// Model is a model from models. Required.
	Model string `yaml:"model"`
	// Version pins a version. Default: unset.
	Version Version `yaml:"version"`
	// Label names one of the model's labels. Default: unset. With neither
	// version nor label the member takes the model's default route (its
	// experiment, sticky by the request's routing key, else its default).
	Label string `yaml:"label"`
	// Weight is the member's weight under weighted_mean and in vote's
	// tie-break; it must be positive. Default: 1.
	Weight *float64 `yaml:"weight"`

	// W is Weight with its default; set by Parse.
	W float64 `yaml:"-"`
}

// Target is what the member asks its model for.
func (m *Member) Target() Target { return Target{Version: m.Version.N, Label: m.Label} }

// Describe names the member's route the way messages and ListRoutes show it:
// "version 7", `label "stable"` or "default route".
func (t Target) Describe() string {
	switch {
	case t.Version > 0:
		return "version " + strconv.FormatInt(t.Version, 10)
	case t.Label != "":
		return "label " + strconv.Quote(t.Label)
	}
	return "default route"
}

// ClassLister returns the class names of a version's scores output, from its
// preprocessing spec, or an error saying why it has none (no spec, no scores
// output, or a scores output that names no classes).
type ClassLister func(model string, version int64) ([]string, error)

// Checks are what Parse checks a config against beyond its own consistency;
// nil fields skip their checks.
type Checks struct {
	// Specs rejects routes to versions without a usable preprocessing spec.
	Specs SpecChecker
	// Classes lets Parse check that the members of a mean, weighted_mean or
	// vote ensemble share one class list.
	Classes ClassLister
}

func decodeEnsembles(n *yaml.Node, report func(string)) map[string]*Ensemble {
	return decodeNamed(n, "ensemble", "ensembles must be a mapping from ensemble name to its members and combiner", report,
		func(v *yaml.Node, where string) *Ensemble {
			e := &Ensemble{}
			strictDecode(v, e, where, func(p string) { e.undecoded = true; report(p) })
			return e
		})
}

// EnsembleNames returns the configured ensemble names, sorted.
func (c *Config) EnsembleNames() []string {
	names := make([]string, 0, len(c.Ensembles))
	for n := range c.Ensembles {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// MemberVersions are the versions of model that ensemble members pin,
// ascending (computed once by Parse).
func (c *Config) MemberVersions(model string) []int64 { return c.pinned[model] }

// validateEnsembles runs after the models were validated (it reads their
// parsed labels, defaults and experiments).
func (c *Config) validateEnsembles(ve *ValidationError, ck Checks) {
	c.pinned = nil
	defer func() {
		for _, e := range c.Ensembles {
			if e == nil {
				continue
			}
			for _, m := range e.Members {
				if m.Version.N > 0 {
					if c.pinned == nil {
						c.pinned = map[string][]int64{}
					}
					c.pinned[m.Model] = append(c.pinned[m.Model], m.Version.N)
				}
			}
		}
		for k, vs := range c.pinned {
			slices.Sort(vs)
			c.pinned[k] = slices.Compact(vs)
		}
	}()
	for _, name := range c.EnsembleNames() {
		e := c.Ensembles[name]
		add := func(format string, args ...any) {
			ve.Problems = append(ve.Problems, fmt.Sprintf("ensemble %q: ", name)+fmt.Sprintf(format, args...))
		}
		if e == nil {
			add("empty ensemble entry: give it members and a combiner, or remove it")
			continue
		}
		if e.undecoded {
			continue
		}
		e.Name = name
		if name == "" || strings.ContainsFunc(name, func(r rune) bool { return unicode.IsSpace(r) || r == '/' }) {
			add("ensemble names must be non-empty, without spaces or slashes")
		}
		if _, clash := c.Models[name]; clash {
			add("the name is also a model's: callers could not tell them apart; rename the ensemble")
		}
		switch e.Combiner {
		case CombineMean, CombineWeightedMean, CombineVote, CombineEach:
		case "":
			add("combiner is required: mean, weighted_mean, vote or each")
		default:
			add("combiner %q is not one of mean, weighted_mean, vote, each", e.Combiner)
		}
		if len(e.Members) == 0 {
			add("no members: list at least one member (model, and optionally version or label, and weight)")
			continue
		}
		c.validateMembers(ve, e, ck)
		switch {
		case e.MinMembers != 0 && e.RequireAll != nil && *e.RequireAll:
			add("require_all and min_members are both set: keep one (require_all: every member must answer; min_members: N answer partially)")
		case e.MinMembers < 0 || e.MinMembers > len(e.Members):
			add("min_members is %d; it must be between 1 and the %d members", e.MinMembers, len(e.Members))
		case e.MinMembers == 0 && e.RequireAll != nil && !*e.RequireAll:
			add("require_all is false but min_members is not set: set min_members to how many members must answer")
		case e.MinMembers > 0:
			e.Need = e.MinMembers
		default:
			e.Need = len(e.Members)
		}
		if e.Timeout.Raw != "" {
			if err := e.Timeout.parse(); err != nil {
				add("timeout: %v", err)
			}
		} else {
			var d time.Duration
			for _, m := range e.Members {
				if mm := c.Models[m.Model]; mm != nil && mm.Timeout.D > d {
					d = mm.Timeout.D
				}
			}
			e.Timeout = Duration{Raw: d.String(), D: d}
		}
	}
}

func (c *Config) validateMembers(ve *ValidationError, e *Ensemble, ck Checks) {
	type classes struct {
		member  string
		version int64
		names   []string
	}
	var first *classes // the class list every member must share
	seen := make(map[string]int, len(e.Members))
	for i := range e.Members {
		m := &e.Members[i]
		if m.Name == "" {
			m.Name = m.Model
		}
		label := m.Name
		if label == "" {
			label = "#" + strconv.Itoa(i+1)
		}
		add := func(format string, args ...any) {
			ve.Problems = append(ve.Problems, fmt.Sprintf("ensemble %q member %q: ", e.Name, label)+fmt.Sprintf(format, args...))
		}
		if j, dup := seen[m.Name]; dup && m.Name != "" {
			add("two members are named %q (#%d and #%d); give one a name: field", m.Name, j+1, i+1)
		} else {
			seen[m.Name] = i
		}
		m.W = 1
		if m.Weight != nil {
			switch w := *m.Weight; {
			case math.IsNaN(w) || math.IsInf(w, 0):
				add("weight %v is not a finite number", w)
			case w <= 0:
				add("weight %v is not positive; weights must be > 0 (leave it out for 1)", w)
			default:
				m.W = w
			}
		}
		if m.Model == "" {
			add("model is required: name a model from models")
			continue
		}
		if m.Model == e.Name {
			add("an ensemble cannot contain itself")
			continue
		}
		if _, nested := c.Ensembles[m.Model]; nested {
			add("%q is an ensemble; ensembles cannot contain ensembles: list its members here instead", m.Model)
			continue
		}
		model := c.Models[m.Model]
		if model == nil {
			add("model %q is not in models (defined: %s)", m.Model, listOrNone(c.ModelNames()))
			continue
		}
		var versions []int64 // every version the member can be routed to
		switch {
		case m.Version.Raw != "" && m.Label != "":
			add("both version and label are set: keep one")
			continue
		case m.Version.Raw != "":
			if err := m.Version.parse(); err != nil {
				add("%v", err)
				continue
			}
			versions = []int64{m.Version.N}
		case m.Label != "":
			v, ok := model.Labels[m.Label]
			if !ok {
				add("model %q has no label %q (defined: %s)", m.Model, m.Label, listOrNone(sortedLabels(model)))
				continue
			}
			versions = []int64{v.N}
		default:
			if model.DefaultVersion > 0 {
				versions = append(versions, model.DefaultVersion)
			} else if l, ok := model.Labels[model.Default]; ok {
				versions = append(versions, l.N)
			}
			if x := model.Experiment; x != nil {
				for _, a := range x.Arms {
					if a.Weight > 0 && a.Version.N > 0 {
						versions = append(versions, a.Version.N)
					}
				}
			}
			if len(versions) == 0 {
				add("model %q has no default route (no default and no experiment): set version or label", m.Model)
				continue
			}
		}
		slices.Sort(versions)
		versions = slices.Compact(versions)
		for _, v := range versions {
			if ck.Specs != nil {
				if err := ck.Specs(m.Model, v); err != nil {
					add("%s: version %d of model %q has no usable preprocessing spec: %v", m.Target().Describe(), v, m.Model, err)
					continue
				}
			}
			if ck.Classes == nil || !e.Combiner.SharesClasses() {
				continue
			}
			names, err := ck.Classes(m.Model, v)
			if err != nil {
				add("combiner %s needs class scores with class names: version %d of model %q: %v", e.Combiner, v, m.Model, err)
				continue
			}
			if first == nil {
				first = &classes{member: m.Name, version: v, names: names}
			} else if !slices.Equal(first.names, names) {
				add("version %d of model %q scores classes %s, but member %q version %d scores %s: combiner %s needs one class list (use combiner each, or members with the same classes)",
					v, m.Model, classList(names), first.member, first.version, classList(first.names), e.Combiner)
			}
		}
	}
}

func sortedLabels(m *Model) []string {
	ls := make([]string, 0, len(m.Labels))
	for l := range m.Labels {
		ls = append(ls, l)
	}
	sort.Strings(ls)
	return ls
}

// classList shows a class list in a message, shortened past 8 names.
func classList(names []string) string {
	if len(names) > 8 {
		return fmt.Sprintf("[%s ... (%d classes)]", strings.Join(names[:8], " "), len(names))
	}
	return "[" + strings.Join(names, " ") + "]"
}

// EnsembleRoutes is one ensemble in a [Snapshot].
type EnsembleRoutes struct {
	Name     string
	Combiner Combiner
	// Need is how many members must answer (all of them under require_all).
	Need       int
	RequireAll bool
	// Timeout bounds the whole call.
	Timeout time.Duration
	Members []MemberRoutes
	// Routable: at least Need members are routable now.
	Routable bool
}

// MemberRoutes is one member's route and whether it can take traffic now.
type MemberRoutes struct {
	Name   string
	Model  string
	Target Target
	Weight float64
	// Routable: the member's route resolves to a routable version now (for a
	// default route with an experiment: some arm is routable).
	Routable bool
	// Reason says why not; empty when routable.
	Reason string
}

func buildEnsemble(e *Ensemble, models map[string]*ModelRoutes) *EnsembleRoutes {
	er := &EnsembleRoutes{Name: e.Name, Combiner: e.Combiner, Need: e.Need, RequireAll: e.Need == len(e.Members), Timeout: e.Timeout.D}
	live := 0
	for _, m := range e.Members {
		mr := MemberRoutes{Name: m.Name, Model: m.Model, Target: m.Target(), Weight: m.W}
		if r := models[m.Model]; r == nil {
			mr.Reason = "model " + strconv.Quote(m.Model) + " is not in the routing config"
		} else if err := r.routable(mr.Target); err != nil {
			mr.Reason = err.Error()
		} else {
			mr.Routable = true
			live++
		}
		er.Members = append(er.Members, mr)
	}
	er.Routable = live >= er.Need
	return er
}

// routable is nil when t resolves to a version that can take traffic now.
func (m *ModelRoutes) routable(t Target) error {
	if t.Version > 0 {
		for _, v := range m.Versions {
			if v.Version == t.Version {
				if v.Routable {
					return nil
				}
				return &RouteError{Model: m.Name, What: fmt.Sprintf("version %d", t.Version), Reason: v.Reason, Err: ErrNotRoutable}
			}
		}
		return &RouteError{Model: m.Name, What: fmt.Sprintf("version %d", t.Version), Reason: "no host reports it AVAILABLE and it has no spec", Err: ErrNotRoutable}
	}
	_, err := m.resolve(t, "introspection", func() uint64 { return 0 })
	return err
}

// Ensemble returns an ensemble's routes.
func (s *Snapshot) Ensemble(name string) (*EnsembleRoutes, bool) {
	e, ok := s.ensembles[name]
	return e, ok
}

// Ensembles returns every ensemble, sorted by name.
func (s *Snapshot) Ensembles() []*EnsembleRoutes {
	out := make([]*EnsembleRoutes, 0, len(s.ensembles))
	for _, e := range s.ensembles {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b *EnsembleRoutes) int { return strings.Compare(a.Name, b.Name) })
	return out
}
