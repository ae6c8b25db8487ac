package route

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseGood(t *testing.T) {
	b, err := os.ReadFile("testdata/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse("good.yaml", b, nil)
	if err != nil {
		t.Fatalf("Parse(good.yaml) = %v", err)
	}
	r := c.Models["reviews"]
	if got, want := r.Timeout.D, 500*time.Millisecond; got != want {
		t.Errorf("reviews timeout = %v, want %v", got, want)
	}
	if got := r.Pools; len(got) != 1 || got[0] != "gpu" {
		t.Errorf("reviews pools = %v, want inherited [gpu]", got)
	}
	if got, want := r.Experiment.Salt, "reviews/tokenizer-v2"; got != want {
		t.Errorf("salt = %q, want default %q", got, want)
	}
	if got := r.Labels["canary"].N; got != 8 {
		t.Errorf("canary = %d, want 8", got)
	}
	ch := c.Models["churn"]
	if ch.DefaultVersion != 3 || ch.Timeout.D != 2*time.Second {
		t.Errorf("churn default=%d timeout=%v, want 3 and inherited 2s", ch.DefaultVersion, ch.Timeout.D)
	}
	if c.Limits.MaxInstances != 64 || c.Limits.MaxTextBytes != DefaultMaxTextBytes {
		t.Errorf("limits = %+v, want max_instances 64 and default text bytes", c.Limits)
	}
	if len(c.Hosts.Pools) != 2 || len(c.Hosts.Pools["cpu"].Static) != 2 {
		t.Errorf("backends decoded as %+v, want pools gpu and cpu", c.Hosts.Pools)
	}
	if bc := r.BatchingConfig; !bc.Enabled || bc.MaxBatchSize != 32 || bc.MaxEnqueuedBatches == 0 {
		t.Errorf("reviews batching = %+v, want enabled, max 32, other fields defaulted", bc)
	}
	if ch.BatchingConfig.Enabled {
		t.Errorf("churn batching enabled without a batching block")
	}
}

func TestParseProblems(t *testing.T) {
	const base = "defaults: {pools: [gpu]}\n"
	tests := []struct {
		name string
		yaml string
		want []string // substrings of distinct problems
	}{
		{"empty file", "", []string{"the file is empty"}},
		{"syntax", "models: [", []string{"did not find expected"}},
		{"no models", "defaults: {pools: [a]}\n", []string{"no models"}},
		{"unknown field", base + "models:\n  m:\n    defualt: 3\n", []string{`model "m": line 4: unknown field "defualt" (known: batching, default, experiment, labels, pools, shadow, timeout)`}},
		{"unknown arm field", base + "models:\n  m:\n    experiment: {name: e, arms: [{name: a, version: 1, wieght: 1}]}\n", []string{`model "m": line 4: unknown field "wieght" (known: name, version, weight)`}},
		{"unknown top-level", base + "modles: {}\n", []string{`unknown top-level field "modles"`, "no models"}},
		{"duplicate model", base + "models:\n  m: {}\n  m: {}\n", []string{`model "m": line 4: the model is listed twice`}},
		{"field set twice", base + "models:\n  m: {default: \"1\", default: \"2\"}\n", []string{`field "default" is set twice`}},
		{"weight not a number", base + "models:\n  m:\n    experiment: {name: e, arms: [{name: a, version: 1, weight: lots}]}\n", []string{`model "m": line 4: cannot unmarshal !!str ` + "`lots`" + ` into float64`}},
		{"models not mapping", base + "models: [a, b]\n", []string{"models must be a mapping"}},
		{"top level list", "- a\n", []string{"the top level must be a mapping"}},
		{"alias", base + "x: &p [gpu]\nmodels: {m: {pools: *p}}\n", []string{"aliases are not supported"}},
		{"bad version syntax", base + "models:\n  m:\n    labels: {stable: v7}\n", []string{`model "m": label "stable": version "v7" is not a positive integer`}},
		{"negative label version", base + "models:\n  m:\n    labels: {stable: -1}\n", []string{`label "stable": version "-1"`}},
		{"numeric label name", base + "models:\n  m:\n    labels: {\"12\": 3}\n", []string{`label "12": a label name cannot be a number`}},
		{"label pointing nowhere", base + "models:\n  m:\n    default: stable\n    labels: {canary: 3}\n", []string{`default label "stable" points nowhere: it is not in labels (defined: canary)`}},
		{"default zero", base + "models:\n  m:\n    default: \"0\"\n", []string{`default: version "0"`}},
		{"no pools", "models:\n  m:\n    default: \"1\"\n", []string{`model "m": no pools`}},
		{"dup pools", "models:\n  m:\n    pools: [a, a]\n", []string{`pool "a" listed twice`}},
		{"bad timeout", base + "models:\n  m:\n    timeout: soon\n", []string{`timeout: duration "soon"`}},
		{"bad default timeout", "defaults: {pools: [a], timeout: -1s}\nmodels: {m: {}}\n", []string{`defaults.timeout`}},
		{"bad limit", base + "limits: {max_instances: -1}\nmodels: {m: {}}\n", []string{"limits.max_instances is -1"}},
		{"no experiment name", base + "models:\n  m:\n    experiment: {arms: [{name: a, version: 1, weight: 1}]}\n", []string{"experiment: name is required"}},
		{"no arms", base + "models:\n  m:\n    experiment: {name: e}\n", []string{`experiment "e": no arms`}},
		{"negative weight", base + "models:\n  m:\n    experiment: {name: e, arms: [{name: a, version: 1, weight: -1}, {name: b, version: 2, weight: 1}]}\n", []string{`experiment "e" arm "a": weight -1 is negative`}},
		{"all zero weights", base + "models:\n  m:\n    experiment: {name: e, arms: [{name: a, version: 1, weight: 0}, {name: b, version: 2}]}\n", []string{`experiment "e": all arm weights are zero`}},
		{"nan weight", base + "models:\n  m:\n    experiment: {name: e, arms: [{name: a, version: 1, weight: .nan}]}\n", []string{"is not a finite number"}},
		{"duplicate arm", base + "models:\n  m:\n    experiment: {name: e, arms: [{name: a, version: 1, weight: 1}, {name: a, version: 2, weight: 1}]}\n", []string{`arm "a": duplicate arm name (arms #1 and #2)`}},
		{"arm bad version", base + "models:\n  m:\n    experiment: {name: e, arms: [{name: a, version: latest, weight: 1}]}\n", []string{`experiment "e" arm "a": version "latest" is not a positive integer`}},
		{"arm missing version", base + "models:\n  m:\n    experiment: {name: e, arms: [{name: a, weight: 1}]}\n", []string{`arm "a": version is required`}},
		{"arm no name", base + "models:\n  m:\n    experiment: {name: e, arms: [{version: 1, weight: 1}]}\n", []string{`arm #1: name is required`}},
		{"tiny weight", base + "models:\n  m:\n    experiment: {name: e, arms: [{name: a, version: 1, weight: 1e9}, {name: b, version: 2, weight: 1}]}\n", []string{`arm "b": weight 1 is too small a share`}},
		{"two documents", base + "models: {m: {}}\n---\nmodels: {n: {}}\n", []string{"more than one YAML document"}},
		{"undefined pool", "backends: {pools: {gpu: {static: [\"127.0.0.1:1\"]}}}\nmodels:\n  m: {pools: [gpu, tpu]}\n", []string{`model "m": pool "tpu" is not defined in backends.pools (defined: gpu)`}},
		{"bad backends", "backends: {pools: {}}\nmodels:\n  m: {pools: [gpu]}\n", []string{"backends: "}},
		{"bad batching", base + "models:\n  m: {batching: {enabled: true, max_batch_size: 0}}\n", []string{`model "m": batching: max_batch_size is 0`}},
		{"unknown batching field", base + "models:\n  m: {batching: {enabeld: true}}\n", []string{`model "m": batching: line 3: unknown field "enabeld"`}},
		{"many at once", base + "models:\n  a:\n    labels: {x: y}\n  b:\n    default: nope\n  c:\n    experiment: {name: e, arms: [{name: z, version: 0, weight: 1}]}\n",
			[]string{`model "a": label "x"`, `model "b": default label "nope"`, `model "c": experiment "e" arm "z": version "0"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("routes.yaml", []byte(tc.yaml), nil)
			if err == nil {
				t.Fatalf("Parse(%q) = %+v, want an error", tc.yaml, c)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("Parse(%q) error %v does not wrap ErrInvalidConfig", tc.yaml, err)
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Parse(%q) error %T is not a *ValidationError", tc.yaml, err)
			}
			msg := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("Parse(%q) error:\n%s\nwant it to contain %q", tc.yaml, msg, w)
				}
			}
			if len(ve.Problems) < len(tc.want) {
				t.Errorf("Parse(%q) found %d problems, want at least %d: %v", tc.yaml, len(ve.Problems), len(tc.want), ve.Problems)
			}
			if !strings.HasPrefix(msg, "routes.yaml: ") {
				t.Errorf("error %q does not name the file", msg)
			}
		})
	}
}

func TestParseSpecChecks(t *testing.T) {
	y := "defaults: {pools: [gpu]}\nmodels:\n  m:\n    default: \"5\"\n    labels: {stable: 7}\n    experiment: {name: e, arms: [{name: a, version: 7, weight: 1}, {name: b, version: 9, weight: 1}]}\n"
	has := map[int64]bool{7: true}
	specs := func(model string, v int64) error {
		if has[v] {
			return nil
		}
		return errors.New("no tfgate-preprocess.json")
	}
	_, err := Parse("r.yaml", []byte(y), specs)
	if err == nil {
		t.Fatal("Parse with versions lacking specs succeeded, want error")
	}
	for _, w := range []string{`model "m": default: version 5 has no usable preprocessing spec`, `experiment "e" arm "b": version 9 has no usable preprocessing spec: no tfgate-preprocess.json`} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error:\n%v\nwant it to contain %q", err, w)
		}
	}
	if strings.Contains(err.Error(), `arm "a"`) {
		t.Errorf("error names arm a, whose version has a spec: %v", err)
	}
	has[5], has[9] = true, true
	if _, err := Parse("r.yaml", []byte(y), specs); err != nil {
		t.Errorf("Parse with every spec present = %v, want nil", err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(t.TempDir()+"/nope.yaml", nil)
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want ErrNotExist", err)
	}
}

func TestDeployExamplesParse(t *testing.T) {
	for _, f := range []string{"../../deploy/gateway/routes.yaml", "../../deploy/gateway/routes-local.yaml"} {
		t.Run(f, func(t *testing.T) {
			if _, err := Load(f, nil); err != nil {
				t.Errorf("Load(%s) = %v", f, err)
			}
		})
	}
}
