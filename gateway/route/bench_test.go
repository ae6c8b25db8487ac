package route

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// BenchmarkResolve measures route resolution; BenchmarkResolve/baseline is a
// bare map lookup of the model name, the least any router does.
func BenchmarkResolve(b *testing.B) {
	s := Build(mustParse(b, expConfig(50, 30, 20)), ready(1, 2, 3), 1, BuildOptions{})
	base := map[string]int64{"m": 1}
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprintf("customer-%08d", i)
	}
	var sink int64
	b.Run("baseline", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			sink += base["m"]
		}
	})
	b.Run("sticky", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			r, _, _ := s.Resolve("m", Target{}, keys[i&1023])
			sink += r.Version
		}
	})
	b.Run("keyless", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r, _, _ := s.Resolve("m", Target{}, "")
			sink += r.Version
		}
	})
	b.Run("label", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r, _, _ := s.Resolve("m", Target{Label: "canary"}, "")
			sink += r.Version
		}
	})
	_ = sink
}

func bigConfig(n int) []byte {
	var b strings.Builder
	b.WriteString("defaults: {pools: [gpu, cpu], timeout: 1s}\nmodels:\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "  customer-%06d:\n    default: stable\n    labels: {stable: %d, canary: %d}\n", i, 100+i%7, 101+i%7)
		if i%10 == 0 {
			fmt.Fprintf(&b, "    experiment:\n      name: exp-%d\n      arms:\n        - {name: control, version: %d, weight: 90}\n        - {name: treatment, version: %d, weight: 10}\n", i, 100+i%7, 101+i%7)
		}
	}
	return []byte(b.String())
}

// BenchmarkLoad50k parses and validates a 50,000-model config; baseline is
// yaml.v3 parsing the same bytes into a yaml.Node tree (syntax only, no types, no
// checks). Decoding the whole file with one yaml.Unmarshal into a map is not a
// usable baseline: yaml.v3's pairwise duplicate-key check makes it quadratic
// (over two minutes here), which is why Parse decodes model by model.
func BenchmarkLoad50k(b *testing.B) {
	data := bigConfig(50000)
	b.Run("baseline-yaml-node", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			var n yaml.Node
			if err := yaml.Unmarshal(data, &n); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parse+validate", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if _, err := Parse("big.yaml", data, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parse+validate+build", func(b *testing.B) {
		b.ReportAllocs()
		st := ready(100, 101, 102, 103, 104, 105, 106, 107)
		var s *Snapshot
		for b.Loop() {
			c, err := Parse("big.yaml", data, nil)
			if err != nil {
				b.Fatal(err)
			}
			s = Build(c, st, 1, BuildOptions{})
		}
		// Memory the gateway keeps while serving: config plus snapshot.
		b.StopTimer()
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		runtime.KeepAlive(s)
		s = nil
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(int64(before.HeapAlloc)-int64(after.HeapAlloc))/(1<<20), "retained-MiB")
	})
}

// fleetState is the fleet bench's state: one version per model, with a spec,
// on no host (unplaced) except every tenth model's.
type fleetState struct{}

func (fleetState) SpecStatus(string, int64) error { return nil }
func (fleetState) Versions(string) []int64        { return []int64{1} }
func (fleetState) AvailableHosts(model string, _ int64) []string {
	if strings.HasSuffix(model, "0") {
		return []string{"h1:8500"}
	}
	return nil
}

// BenchmarkBuildFleet50k is one snapshot rebuild at the fleet bench's shape
// (50,000 models named `{}` in the config, no default, one version each, 10% on
// a host): the gateway rebuilds on every readiness change, so B/op is garbage
// per load or eviction and retained-MiB the snapshot it keeps.
func BenchmarkBuildFleet50k(b *testing.B) {
	var y strings.Builder
	y.WriteString("defaults: {pools: [main], timeout: 5s}\nmodels:\n")
	for i := range 50000 {
		fmt.Fprintf(&y, "  cust-%d: {}\n", i)
	}
	c, err := Parse("fleet.yaml", []byte(y.String()), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	var s *Snapshot
	for b.Loop() {
		s = Build(c, fleetState{}, 1, BuildOptions{})
	}
	b.StopTimer()
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	runtime.KeepAlive(s)
	s = nil
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(c)
	b.ReportMetric(float64(int64(before.HeapAlloc)-int64(after.HeapAlloc))/(1<<20), "retained-MiB")
}
