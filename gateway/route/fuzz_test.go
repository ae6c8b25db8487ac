package route

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse feeds arbitrary bytes to the config parser: it must never panic, and a
// config it accepts must build and resolve every model's routes without panicking.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(expConfig(50, 50)))
	f.Add([]byte("models: {m: {pools: [a], experiment: {name: e, arms: [{name: a, version: 1, weight: 1e308}, {name: b, version: 2, weight: 1e308}]}}}"))
	f.Add([]byte("models: {m: {pools: [a], labels: {x: [1]}, timeout: {a: b}}}"))
	f.Add([]byte(ensBase + "ensembles:\n  e: {combiner: weighted_mean, min_members: 1, timeout: 1s, members: [{model: reviews}, {model: reviews, name: c, label: canary, weight: 2}, {model: topics, version: 4}]}\n"))
	f.Add([]byte(ensBase + "ensembles:\n  e: {combiner: vote, require_all: true, members: [{model: e}, {model: f, weight: -1}]}\n  f: {combiner: each, members: [{model: churn, version: x}]}\n"))
	f.Add([]byte(ensBase + "ensembles: {reviews: {combiner: mean, members: [{model: topics, weight: .inf}]}, g: ~, h: [1]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseWith("fuzz.yaml", data, Checks{Classes: classesOf})
		if err != nil {
			if c != nil {
				t.Fatalf("Parse returned a config along with error %v", err)
			}
			return
		}
		s := Build(c, ready(1, 2, 3), 1, BuildOptions{})
		for _, m := range s.Models() {
			for _, k := range []string{"", "key"} {
				r, _, err := s.Resolve(m.Name, Target{}, k)
				if err == nil && r.Version <= 0 {
					t.Fatalf("model %q resolved to version %d", m.Name, r.Version)
				}
			}
			for l := range m.Labels {
				s.Resolve(m.Name, Target{Label: l}, "")
			}
		}
		for _, e := range s.Ensembles() {
			if e.Need < 1 || e.Need > len(e.Members) || e.Timeout <= 0 {
				t.Fatalf("ensemble %q accepted with need %d of %d members, timeout %v", e.Name, e.Need, len(e.Members), e.Timeout)
			}
			for _, m := range e.Members {
				if _, ok := s.Model(m.Model); !ok || m.Weight <= 0 {
					t.Fatalf("ensemble %q member %q accepted with model %q, weight %v", e.Name, m.Name, m.Model, m.Weight)
				}
			}
		}
	})
}
