package route

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestShadowConfig(t *testing.T) {
	noSpec := func(model string, v int64) error {
		if v == 9 {
			return errors.New("no spec")
		}
		return nil
	}
	cfg := func(shadow string) string {
		return "defaults: {pools: [p]}\nmodels:\n  reviews:\n    default: stable\n    labels: {stable: 1}\n" +
			"    experiment: {name: e, arms: [{name: a, version: 1, weight: 1}, {name: b, version: 3, weight: 1}]}\n" +
			"    shadow: " + shadow + "\n"
	}
	for _, tc := range []struct {
		name, shadow, want string
	}{
		{name: "valid", shadow: "{version: 2, percent: 12.5}"},
		{name: "unknown version", shadow: "{version: 9, percent: 10}", want: `routes.yaml: model "reviews": shadow (line 7): version 9 has no usable preprocessing spec`},
		{name: "percent above 100", shadow: "{version: 2, percent: 101}", want: "percent 101 is outside (0, 100]"},
		{name: "percent zero", shadow: "{version: 2, percent: 0}", want: "outside (0, 100]"},
		{name: "percent missing", shadow: "{version: 2}", want: "percent is required"},
		{name: "shadow is the default", shadow: "{version: 1, percent: 10}", want: "version 1 is the primary"},
		{name: "shadow is an arm", shadow: "{version: 3, percent: 12.5}"},
		{name: "no version", shadow: "{percent: 10}", want: "version is required"},
		{name: "bad version", shadow: "{version: two, percent: 10}", want: `version "two" is not a positive integer`},
		{name: "unknown field", shadow: "{version: 2, percent: 10, pct: 3}", want: `unknown field "pct"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("routes.yaml", []byte(cfg(tc.shadow)), noSpec)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				s := c.Models["reviews"].Shadow
				if (s.Version.N != 2 && s.Version.N != 3) || s.Percent != 12.5 || fmt.Sprint(c.Models["reviews"].NamedVersions()) != map[int64]string{2: "[1 2 3]", 3: "[1 3]"}[s.Version.N] {
					t.Errorf("shadow %+v, named versions %v", s, c.Models["reviews"].NamedVersions())
				}
				return
			}
			if err == nil || !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("shadow %s: %v, want an invalid config with %q", tc.shadow, err, tc.want)
			}
		})
	}
}

func TestShadowOfEveryArm(t *testing.T) {
	cfg := "defaults: {pools: [p]}\nmodels:\n  m:\n    default: \"1\"\n    experiment: {name: e, arms: [{name: a, version: 2, weight: 1}]}\n    shadow: {version: 2, percent: 5}\n"
	if _, err := Parse("r.yaml", []byte(cfg), nil); err == nil || !strings.Contains(err.Error(), "every experiment arm's version") {
		t.Errorf("shadow of the only arm's version: %v", err)
	}
}
