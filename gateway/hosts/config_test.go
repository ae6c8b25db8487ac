package hosts

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		name    string
		yaml    string
		wantErr []string // substrings, all must appear; nil means success
		check   func(t *testing.T, c Config)
	}{
		{name: "defaults", yaml: "pools: {gpu: {static: ['h:1']}}", check: func(t *testing.T, c Config) {
			if c.MaxRecvMsgSize != 256<<20 || c.Retry.MaxAttempts != 2 || c.Hedging.Enabled || c.Readiness.Interval != time.Second ||
				c.Readiness.MaxPollsPerSecond != 1000 {
				t.Errorf("defaults not applied: %+v", c)
			}
		}},
		{name: "consul pool and overrides", yaml: `
pools:
  gpu: {consul: {service: tfs, tag: gpu}}
  cpu: {consul: {service: tfs, tag: cpu}}
consul: {address: "127.0.0.1:8500", token: x}
readiness: {interval: 250ms, concurrency: 4, max_polls_per_second: 200}
hedging: {enabled: true, delay: 30ms, budget_percent: 2}
`, check: func(t *testing.T, c Config) {
			if c.Pools["gpu"].Consul.Tag != "gpu" || c.Readiness.Interval != 250*time.Millisecond ||
				c.Readiness.MaxPollsPerSecond != 200 || resyncQuota(c.Readiness) != 50 || c.Readiness.Timeout != 2*time.Second || !c.Hedging.Enabled {
				t.Errorf("decoded %+v", c)
			}
		}},
		{name: "unknown field", yaml: "pools: {gpu: {static: ['h:1']}}\nretires: {}", wantErr: []string{"retires"}},
		{name: "no pools", yaml: "", wantErr: []string{"at least one pool"}},
		{name: "polls per second too high", yaml: "pools: {gpu: {static: ['h:1']}}\nreadiness: {max_polls_per_second: 2000000}",
			wantErr: []string{"readiness.max_polls_per_second 2000000"}},
		{name: "every problem at once", yaml: `
pools:
  both: {static: ['h:1'], consul: {service: s}}
  none: {}
  badaddr: {static: ['nohost', 'h:0']}
  noservice: {consul: {tag: gpu}}
consul: {scheme: ftp}
readiness: {interval: 1ms, concurrency: 0, max_polls_per_second: 0}
retry: {max_attempts: 9}
ejection: {base_duration: 2s, max_duration: 1s}
hedging: {budget_percent: 200}
`, wantErr: []string{`pool "both"`, `pool "none"`, `"nohost"`, `"h:0"`, `pool "noservice"`, "ftp",
			"readiness.interval", "readiness.concurrency", "readiness.max_polls_per_second", "retry.max_attempts", "ejection", "budget_percent"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Decode([]byte(tc.yaml))
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Decode(%q): %v", tc.yaml, err)
				}
				tc.check(t, c)
				return
			}
			if err == nil {
				t.Fatalf("Decode(%q) succeeded, want errors %q", tc.yaml, tc.wantErr)
			}
			if !errors.Is(err, ErrConfig) {
				t.Errorf("Decode(%q) error %v does not wrap ErrConfig", tc.yaml, err)
			}
			for _, s := range tc.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("Decode(%q) error does not mention %q:\n%v", tc.yaml, s, err)
				}
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		"pools: {gpu: {static: ['h:1']}}",
		"pools: {gpu: {consul: {service: tfs, tag: gpu}}}\nconsul: {address: x}",
		"pools: {a: {static: ['[::1]:80']}}\nretry: {max_attempts: 1}\nhedging: {enabled: true}",
		"", "pools: [", "pools: {a: {}}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Decode(data)
		if err != nil {
			if !errors.Is(err, ErrConfig) && !strings.Contains(err.Error(), "consul") {
				t.Fatalf("Decode error %v wraps no known sentinel", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("decoded config fails Validate: %v", err)
		}
	})
}

func TestDeployExampleDecodes(t *testing.T) {
	data, err := os.ReadFile("../../deploy/consul/backends.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Backends yaml.Node `yaml:"backends"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	c, err := DecodeNode(&doc.Backends)
	if err != nil {
		t.Fatalf("deploy/consul/backends.example.yaml: %v", err)
	}
	want := DefaultConfig()
	if c.Pools["gpu"].Consul == nil || c.Pools["gpu"].Consul.Tag != "gpu" || c.Readiness != want.Readiness ||
		c.Retry != want.Retry || c.Ejection != want.Ejection || c.Hedging != want.Hedging || c.MaxRecvMsgSize != want.MaxRecvMsgSize {
		t.Errorf("example config differs from the documented defaults: %+v", c)
	}
	if _, err := DecodeNode(&yaml.Node{}); !errors.Is(err, ErrConfig) {
		t.Errorf("DecodeNode(absent) = %v, want ErrConfig", err)
	}
}
