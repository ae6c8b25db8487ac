package route

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

const ensBase = "defaults: {pools: [gpu], timeout: 2s}\nmodels:\n" +
	"  reviews: {default: stable, labels: {stable: 1, canary: 2}, experiment: {name: e, arms: [{name: a, version: 1, weight: 1}, {name: b, version: 3, weight: 1}]}}\n" +
	"  topics: {default: \"4\", timeout: 3s}\n" +
	"  churn: {default: \"1\"}\n" +
	"  bare: {labels: {x: 1}}\n"

// classesOf: churn scores two classes, every other model three.
func classesOf(model string, v int64) ([]string, error) {
	switch {
	case model == "churn":
		return []string{"stay", "leave"}, nil
	case model == "topics" && v == 9:
		return nil, errors.New("its spec has no scores output")
	}
	return []string{"neg", "neu", "pos"}, nil
}

func TestParseEnsemble(t *testing.T) {
	y := ensBase + "ensembles:\n  sentiment:\n    combiner: weighted_mean\n    min_members: 2\n    members:\n" +
		"      - {model: reviews}\n      - {model: reviews, name: reviews-canary, label: canary, weight: 2.5}\n      - {model: topics, version: 4}\n"
	c, err := ParseWith("r.yaml", []byte(y), Checks{Classes: classesOf})
	if err != nil {
		t.Fatal(err)
	}
	e := c.Ensembles["sentiment"]
	if e.Name != "sentiment" || e.Need != 2 || e.Timeout.D != 3*time.Second {
		t.Errorf("ensemble = name %q need %d timeout %v, want sentiment, 2, the longest member timeout 3s", e.Name, e.Need, e.Timeout.D)
	}
	if m := e.Members; m[0].Name != "reviews" || m[0].W != 1 || m[1].Name != "reviews-canary" || m[1].W != 2.5 || m[2].Version.N != 4 {
		t.Errorf("members = %+v, want names and weights defaulted", m)
	}
	if got := c.MemberVersions("topics"); len(got) != 1 || got[0] != 4 {
		t.Errorf("MemberVersions(topics) = %v, want [4]", got)
	}

	s := Build(c, ready(1, 2, 4), 1, BuildOptions{})
	er, ok := s.Ensemble("sentiment")
	if !ok || er.Need != 2 || er.RequireAll || !er.Routable || len(er.Members) != 3 {
		t.Fatalf("Ensemble(sentiment) = %+v, %v", er, ok)
	}
	for _, m := range er.Members {
		if !m.Routable {
			t.Errorf("member %q not routable: %s", m.Name, m.Reason)
		}
	}
	if _, _, err := s.Resolve("sentiment", Target{}, ""); !errors.Is(err, ErrUnknownModel) {
		t.Errorf("Resolve(ensemble name) = %v, want ErrUnknownModel (ensembles are not models)", err)
	}

	// canary's version 2 loses its host: the member says why, the ensemble still
	// has its 2 of 3.
	s = Build(c, ready(1, 4), 2, BuildOptions{})
	er, _ = s.Ensemble("sentiment")
	if m := er.Members[1]; m.Routable || !strings.Contains(m.Reason, `label "canary" -> version 2`) {
		t.Errorf("canary member = %+v, want not routable, naming the label", m)
	}
	if !er.Routable {
		t.Errorf("ensemble with 2 of 3 routable members and min_members 2 is not routable")
	}
	s = Build(c, ready(4), 3, BuildOptions{})
	if er, _ := s.Ensemble("sentiment"); er.Routable || er.Members[0].Routable {
		t.Errorf("ensemble with only topics routable = %+v, want not routable", er)
	}
}

func TestParseEnsembleProblems(t *testing.T) {
	ens := func(body string) string { return ensBase + "ensembles:\n" + body }
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"unknown model", ens("  e: {combiner: mean, members: [{model: reviews}, {model: nope}]}\n"),
			[]string{`routes.yaml: ensemble "e" member "nope": model "nope" is not in models (defined: bare, churn, reviews, topics)`}},
		{"classes differ under mean", ens("  e: {combiner: mean, members: [{model: reviews}, {model: churn}]}\n"),
			[]string{`ensemble "e" member "churn": version 1 of model "churn" scores classes [stay leave], but member "reviews" version 1 scores [neg neu pos]: combiner mean needs one class list`}},
		{"classes differ under vote", ens("  e: {combiner: vote, members: [{model: topics}, {model: churn}]}\n"),
			[]string{`member "churn": version 1 of model "churn" scores classes [stay leave]`}},
		{"no class names", ens("  e: {combiner: mean, members: [{model: reviews}, {model: topics, version: 9}]}\n"),
			[]string{`ensemble "e" member "topics": combiner mean needs class scores with class names: version 9 of model "topics": its spec has no scores output`}},
		{"zero weight", ens("  e: {combiner: weighted_mean, members: [{model: reviews, weight: 0}]}\n"),
			[]string{`ensemble "e" member "reviews": weight 0 is not positive`}},
		{"negative weight", ens("  e: {combiner: weighted_mean, members: [{model: reviews, weight: -2}]}\n"),
			[]string{`weight -2 is not positive`}},
		{"nan weight", ens("  e: {combiner: weighted_mean, members: [{model: reviews, weight: .nan}]}\n"),
			[]string{`weight NaN is not a finite number`}},
		{"nested in itself", ens("  e: {combiner: mean, members: [{model: reviews}, {model: e}]}\n"),
			[]string{`ensemble "e" member "e": an ensemble cannot contain itself`}},
		{"nested", ens("  e: {combiner: mean, members: [{model: f}]}\n  f: {combiner: mean, members: [{model: reviews}]}\n"),
			[]string{`ensemble "e" member "f": "f" is an ensemble; ensembles cannot contain ensembles`}},
		{"name collides with a model", ens("  churn: {combiner: each, members: [{model: reviews}]}\n"),
			[]string{`ensemble "churn": the name is also a model's`}},
		{"no combiner", ens("  e: {members: [{model: reviews}]}\n"), []string{`ensemble "e": combiner is required`}},
		{"bad combiner", ens("  e: {combiner: median, members: [{model: reviews}]}\n"), []string{`combiner "median" is not one of`}},
		{"no members", ens("  e: {combiner: each}\n"), []string{`ensemble "e": no members`}},
		{"empty entry", ens("  e:\n"), []string{`ensemble "e": empty ensemble entry`}},
		{"duplicate member", ens("  e: {combiner: each, members: [{model: reviews}, {model: reviews, label: canary}]}\n"),
			[]string{`ensemble "e" member "reviews": two members are named "reviews" (#1 and #2)`}},
		{"unknown label", ens("  e: {combiner: each, members: [{model: reviews, label: beta}]}\n"),
			[]string{`member "reviews": model "reviews" has no label "beta" (defined: canary, stable)`}},
		{"no default route", ens("  e: {combiner: each, members: [{model: bare}]}\n"),
			[]string{`member "bare": model "bare" has no default route`}},
		{"version and label", ens("  e: {combiner: each, members: [{model: reviews, version: 1, label: canary}]}\n"),
			[]string{`both version and label are set`}},
		{"bad version", ens("  e: {combiner: each, members: [{model: reviews, version: latest}]}\n"),
			[]string{`member "reviews": version "latest" is not a positive integer`}},
		{"min_members too big", ens("  e: {combiner: each, min_members: 3, members: [{model: reviews}, {model: topics}]}\n"),
			[]string{`min_members is 3; it must be between 1 and the 2 members`}},
		{"both policies", ens("  e: {combiner: each, require_all: true, min_members: 1, members: [{model: reviews}]}\n"),
			[]string{`require_all and min_members are both set`}},
		{"require_all false alone", ens("  e: {combiner: each, require_all: false, members: [{model: reviews}]}\n"),
			[]string{`require_all is false but min_members is not set`}},
		{"unknown field", ens("  e: {combiner: each, members: [{model: reviews, wieght: 2}]}\n"),
			[]string{`ensemble "e": line 8: unknown field "wieght" (known: label, model, name, version, weight)`}},
		{"bad timeout", ens("  e: {combiner: each, timeout: soon, members: [{model: reviews}]}\n"), []string{`ensemble "e": timeout: duration "soon"`}},
		{"not a mapping", ens("  - e\n"), []string{"ensembles must be a mapping"}},
		{"many at once", ens("  e: {combiner: mean, members: [{model: nope}, {model: reviews, weight: 0}, {model: churn}]}\n"),
			[]string{`member "nope": model "nope"`, `member "reviews": weight 0`, `member "churn": version 1 of model "churn" scores classes`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseWith("routes.yaml", []byte(tc.yaml), Checks{Classes: classesOf})
			if err == nil {
				t.Fatalf("Parse(%q) = %+v, want an error", tc.yaml, c)
			}
			var ve *ValidationError
			if !errors.As(err, &ve) || !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("Parse(%q) error %T %v is not a *ValidationError", tc.yaml, err, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Parse(%q) error:\n%s\nwant it to contain %q", tc.yaml, err, w)
				}
			}
			if len(ve.Problems) < len(tc.want) {
				t.Errorf("found %d problems, want at least %d: %v", len(ve.Problems), len(tc.want), ve.Problems)
			}
		})
	}
}

// TestEnsembleSpecChecks: a member's pinned version without a spec is rejected
// with the member named.
func TestEnsembleSpecChecks(t *testing.T) {
	y := ensBase + "ensembles:\n  e: {combiner: each, members: [{model: topics, version: 7}]}\n"
	specs := func(model string, v int64) error {
		if model == "topics" && v == 7 {
			return errors.New("no tfgate-preprocess.json")
		}
		return nil
	}
	_, err := ParseWith("r.yaml", []byte(y), Checks{Specs: specs})
	if want := `ensemble "e" member "topics": version 7: version 7 of model "topics" has no usable preprocessing spec: no tfgate-preprocess.json`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Parse = %v, want it to contain %q", err, want)
	}
}

func TestEnsembleMemberVersionStatus(t *testing.T) {
	// A pinned member version the model's routes do not name is still listed.
	y := ensBase + "ensembles:\n  e: {combiner: each, members: [{model: churn, version: 6}]}\n"
	s := Build(mustParse(t, y), ready(1), 1, BuildOptions{})
	er, _ := s.Ensemble("e")
	if m := er.Members[0]; m.Routable || !strings.Contains(m.Reason, "version 6") {
		t.Errorf("member pinned to a version no host has = %+v, want not routable naming version 6", m)
	}
	m, _ := s.Model("churn")
	found := false
	for _, v := range m.Versions {
		found = found || v.Version == 6
	}
	if !found {
		t.Errorf("churn versions %+v do not list the member's pinned version 6", m.Versions)
	}
	if got := fmt.Sprint(s.Ensembles()[0].Name); got != "e" {
		t.Errorf("Ensembles() = %v", got)
	}
}

func TestEnsembleRequirements(t *testing.T) {
	y := ensBase + "ensembles:\n  e: {combiner: each, members: [{model: topics, version: 6}, {model: reviews, version: 1}, {model: reviews, name: c, label: canary}]}\n"
	reqs, _ := mustParse(t, y).Requirements()
	var got []string
	for _, r := range reqs {
		if strings.HasPrefix(r.Reason, "ensemble") {
			got = append(got, fmt.Sprintf("%s/%d %s", r.Key.Model, r.Key.Version, r.Reason))
		}
	}
	if want := "topics/6 ensemble e member topics"; len(got) != 1 || got[0] != want {
		t.Errorf("ensemble requirements = %v, want only [%s] (the others are named by their models)", got, want)
	}
}
