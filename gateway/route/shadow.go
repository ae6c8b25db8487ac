package route

import (
	"fmt"
	"math"
	"strconv"

	"gopkg.in/yaml.v3"
)

// Shadow sends a sample of a model's routed traffic to one more version as
// well, after the primary answered, to compare their outputs (the gateway's
// shadow.go). The caller only ever sees the primary's answer.
type Shadow struct {
	// Version is the version shadowed. Required; it must have a preprocessing
	// spec and differ from the default route's version. It may be an
	// experiment arm's: requests that arm serves are not shadowed (there is
	// nothing to compare), the other arms' are.
	Version Version `yaml:"version"`
	// Percent of the model's routed requests (default, label and experiment
	// routes; not explicit version pins) also sent to Version, in (0, 100].
	// Required.
	Percent float64 `yaml:"percent"`

	// Line is where the shadow block starts in the file (for messages).
	Line int `yaml:"-"`
	set  map[string]bool
}

// UnmarshalYAML decodes a shadow block, rejecting unknown fields.
func (s *Shadow) UnmarshalYAML(n *yaml.Node) error {
	s.Line = n.Line
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: shadow must be a mapping like {version: 2, percent: 10}", n.Line)
	}
	s.set = map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		s.set[k.Value] = true
		switch k.Value {
		case "version":
			if err := s.Version.UnmarshalYAML(v); err != nil {
				return err
			}
		case "percent":
			f, err := strconv.ParseFloat(v.Value, 64)
			if v.Kind != yaml.ScalarNode || err != nil {
				return fmt.Errorf("line %d: shadow percent %q is not a number", v.Line, v.Value)
			}
			s.Percent = f
		default:
			return fmt.Errorf("line %d: shadow: unknown field %q (known: version, percent)", k.Line, k.Value)
		}
	}
	return nil
}

// validateShadow checks m.Shadow after the model's default, labels and
// experiment were validated.
func validateShadow(ve *ValidationError, m *Model, checkSpec func(string, int64)) {
	s := m.Shadow
	if s == nil {
		return
	}
	where := fmt.Sprintf("shadow (line %d)", s.Line)
	if s.Version.Raw == "" {
		ve.add(m.Name, "%s: version is required", where)
	} else if err := s.Version.parse(); err != nil {
		ve.add(m.Name, "%s: %v", where, err)
	} else {
		checkSpec(where, s.Version.N)
		if p := m.defaultRouteVersion(); p == s.Version.N {
			ve.add(m.Name, "%s: version %d is the primary (the default route's version); shadow another version", where, p)
		} else if m.Experiment != nil && len(m.Experiment.Arms) > 0 && allArms(m.Experiment.Arms, s.Version.N) {
			ve.add(m.Name, "%s: version %d is every experiment arm's version: nothing would be shadowed", where, s.Version.N)
		}
	}
	switch {
	case !s.set["percent"]:
		ve.add(m.Name, "%s: percent is required (0 < percent <= 100)", where)
	case math.IsNaN(s.Percent) || s.Percent <= 0 || s.Percent > 100:
		ve.add(m.Name, "%s: percent %v is outside (0, 100]", where, s.Percent)
	}
}

// defaultRouteVersion is the version the default route names (its number or
// its label's), 0 when unknown.
func (m *Model) defaultRouteVersion() int64 {
	if m.DefaultVersion > 0 {
		return m.DefaultVersion
	}
	if v, ok := m.Labels[m.Default]; ok {
		return v.N
	}
	return 0
}

func allArms(arms []Arm, v int64) bool {
	for _, a := range arms {
		if a.Version.N != v {
			return false
		}
	}
	return true
}
