package placement

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// fleet builds 50,000 models with log-normal resident sizes between 5 MB and
// 1.2 GB and Zipf-like demand (rank r gets rate 100/r^1.1, last used in rank
// order), over 20 hosts holding capacityShare of the catalog's bytes.
func fleet(models, hosts int, capacityShare float64) Input {
	r := rand.New(rand.NewPCG(7, 11))
	cat := make([]Version, models)
	var total int64
	for i := range cat {
		// log-normal, median ~60 MB, clamped to [5 MB, 1.2 GB]
		s := math.Exp(math.Log(60e6) + 1.2*r.NormFloat64())
		s = min(max(s, 5e6), 1.2e9)
		cat[i] = Version{Key: Key{Model: fmt.Sprintf("customer-%06d", i), Version: 1}, ObjectBytes: int64(s)}
		total += int64(s)
	}
	hs := make([]Host, hosts)
	for i := range hs {
		hs[i] = Host{ID: fmt.Sprintf("serving-%02d", i), CapacityBytes: int64(float64(total) * capacityShare / float64(hosts))}
	}
	dm := make(map[Key]Demand, models)
	for i, v := range cat {
		dm[v.Key] = Demand{Rate: 100 / math.Pow(float64(i+1), 1.1), LastUsed: t0.Add(-time.Duration(i) * time.Second)}
	}
	return Input{Now: t0, Config: Config{Default: PoolConfig{MemoryMultiplier: 1}}, Hosts: hs, Catalog: cat, Demand: dm}
}

// encodeAll writes every host's value against prev manifests and returns the
// bytes a KV write of the changes would carry (changed shards and manifests).
func encodeAll(tb testing.TB, a *Assignment, prev map[string]Manifest, gen uint64) int {
	n := 0
	for id, ha := range a.Hosts {
		var pm *Manifest
		if m, ok := prev[id]; ok {
			pm = &m
		}
		m, vals, err := EncodeHost(ha.Pool, id, ha.Entries, DefaultShards, pm, gen)
		if err != nil {
			tb.Fatal(err)
		}
		if len(vals) == 0 && pm != nil {
			continue
		}
		for _, v := range vals {
			n += len(v.Value)
		}
		n += len(EncodeManifest(m))
		prev[id] = m
	}
	return n
}

// BenchmarkDecide: one placement decision over 50,000 models x 20 hosts, in
// steady state, after a new version of a cold model is published and requested
// (the change a demand report brings). kv_bytes/op is what writing the resulting
// change to Consul carries (changed shards and manifests); kv_bytes_full is a
// first write of every host.
func BenchmarkDecide(b *testing.B) {
	for _, tc := range []struct {
		name  string
		share float64
	}{{"fits-all", 1.5}, {"holds-10pct", 0.10}} {
		b.Run(tc.name, func(b *testing.B) {
			in := fleet(50000, 20, tc.share)
			d, err := Decide(in)
			if err != nil {
				b.Fatal(err)
			}
			manifests := map[string]Manifest{}
			full := encodeAll(b, &d.Assignment, manifests, 1)
			in.Previous = &d.Assignment
			copies := d.Stats.Copies
			var kvBytes int
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				in.Now = in.Now.Add(10 * time.Minute)
				// A new version of a cold model is published and requested.
				old := in.Catalog[len(in.Catalog)-1-i%20000]
				nv := Version{Key: Key{Model: old.Model, Version: int64(i + 2)}, ObjectBytes: old.ObjectBytes}
				in.Catalog = append(in.Catalog, nv)
				in.Demand[nv.Key] = Demand{Rate: 1, LastUsed: in.Now}
				d, err := Decide(in)
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				kvBytes += encodeAll(b, &d.Assignment, manifests, uint64(i+2))
				in.Previous = &d.Assignment
				b.StartTimer()
			}
			b.ReportMetric(float64(kvBytes)/float64(b.N), "kv_bytes/op")
			b.ReportMetric(float64(full), "kv_bytes_full")
			b.ReportMetric(float64(copies), "copies")
		})
	}
}

// TestFleetHostLeaveJoin measures movement at the benchmark's scale: 50,000
// models over 20 hosts with room for all, one host leaves, then comes back.
func TestFleetHostLeaveJoin(t *testing.T) {
	if testing.Short() {
		t.Skip("50,000-model decisions")
	}
	in := fleet(50000, 20, 1.5)
	in.Config.MaxMoves = 1 << 20
	base, err := Decide(in)
	if err != nil {
		t.Fatal(err)
	}
	leave := in
	leave.Hosts = in.Hosts[1:]
	leave.Previous = &base.Assignment
	leave.Now = in.Now.Add(time.Hour)
	dl, err := Decide(leave)
	if err != nil {
		t.Fatal(err)
	}
	moved, total := movement(base, dl)
	t.Logf("leave: 1 of 20 hosts removed moved %d of %d versions (%.4f; 1/N = 0.05)", moved, total, float64(moved)/float64(total))
	if f := float64(moved) / float64(total); f < 0.025 || f > 0.075 {
		t.Errorf("leave moved %.4f, want about 0.05", f)
	}
	join := in
	join.Previous = &dl.Assignment
	join.Now = in.Now.Add(2 * time.Hour)
	dj, err := Decide(join) // make-before-break: new copies on the joining host
	if err != nil {
		t.Fatal(err)
	}
	settle := join
	settle.Previous = &dj.Assignment
	settle.Now = in.Now.Add(3 * time.Hour)
	for _, e := range dj.Assignment.Hosts[in.Hosts[0].ID].Entries {
		settle.Resident = append(settle.Resident, Resident{Host: in.Hosts[0].ID, Key: e.Key, Bytes: e.Bytes})
	}
	ds, err := Decide(settle)
	if err != nil {
		t.Fatal(err)
	}
	moved, total = movement(dl, ds)
	t.Logf("join: 1 host added to 19 moved %d of %d versions (%.4f; 1/N = 0.05); %d moves started", moved, total, float64(moved)/float64(total), dj.Stats.Moved)
	if f := float64(moved) / float64(total); f < 0.025 || f > 0.075 {
		t.Errorf("join moved %.4f, want about 0.05", f)
	}
}
