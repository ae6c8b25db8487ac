package route

import (
	"fmt"
	"strings"
)

// SplitWarning says why an experiment's split cannot be what its weights say, or is
// "" when it can: each arm with a weight whose version is not routable gives its share
// to the routable arms, so with two arms the other takes 100%. Ops need to see that at
// once, not after the experiment. When no arm is routable it is "" too: then the
// experiment serves nothing and the default route's error says why.
func (m *ModelRoutes) SplitWarning() string {
	if m.exp == nil {
		return ""
	}
	var out, gone []string
	for _, a := range m.exp.arms {
		if a.Weight > 0 && !a.Routable {
			why := a.Reason
			if why == "" {
				why = "not routable"
			}
			gone = append(gone, fmt.Sprintf("arm %q (version %d, weight %g) gets nothing: %s", a.Name, a.Version, a.Weight, why))
		}
	}
	if len(gone) == 0 {
		return ""
	}
	for _, a := range m.exp.arms {
		if a.Routable {
			out = append(out, fmt.Sprintf("%q takes %.0f%%", a.Name, 100*a.EffectiveShare))
		}
	}
	if len(out) == 0 {
		return "" // nothing is served by the experiment at all: the default route's error says why
	}
	return fmt.Sprintf("experiment %q is not running as configured: %s; %s", m.exp.name, strings.Join(gone, "; "), strings.Join(out, ", "))
}
