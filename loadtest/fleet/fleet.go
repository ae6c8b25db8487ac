// Package fleet holds the pure parts of the fleet benchmark (scripts/bench-fleet.sh):
// the per-customer model catalog with log-normal resident sizes, and the two
// static baselines computed offline from the catalog and the recorded trace
// (loadtest run --trace), so that they see exactly the requests tfgate served.
//
//   - Oracle: the best static assignment with perfect knowledge of the measured
//     trace: models by requests per byte, most first, each onto the host with the
//     most room that holds it (per-host capacity respected), skipping models
//     that fit nowhere. It is the fractional-knapsack greedy, optimal up to the
//     last partly fitting item per host, and it pays no load at all: a request
//     is warm iff its model is in the assignment.
//   - Random: a static assignment of the same capacity, models in a seeded
//     random order, each onto a random host with room, until nothing more fits.
//
// Warm share is counted over the requests sent after warm-up (the trace's warm-up
// flag), the same window as tfgate's.
package fleet

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
)

// Model is one catalog entry: a per-customer model (version 1) and its declared
// resident size.
type Model struct {
	Name  string
	Bytes int64
}

// CatalogSpec is the catalog's shape: N models named Prefix0..Prefix{N-1} whose
// sizes are log-normal (median MedianBytes, sigma of the underlying normal Sigma)
// clipped to [MinBytes, MaxBytes], drawn from Seed.
type CatalogSpec struct {
	N                  int
	Prefix             string
	MedianBytes, Sigma float64
	MinBytes, MaxBytes int64
	Seed               uint64
}

// Catalog draws the catalog. It is deterministic in spec.
func Catalog(spec CatalogSpec) ([]Model, error) {
	if spec.N < 1 || spec.MinBytes < 1 || spec.MaxBytes < spec.MinBytes || !(spec.MedianBytes > 0) || !(spec.Sigma >= 0) {
		return nil, fmt.Errorf("fleet: catalog needs n >= 1, 1 <= min <= max bytes, median > 0 and sigma >= 0 (got %+v)", spec)
	}
	rng := rand.New(rand.NewPCG(spec.Seed, 0x666c656574))
	out := make([]Model, spec.N)
	for i := range out {
		v := spec.MedianBytes * math.Exp(rng.NormFloat64()*spec.Sigma)
		b := min(max(int64(v), spec.MinBytes), spec.MaxBytes)
		out[i] = Model{Name: spec.Prefix + strconv.Itoa(i), Bytes: b}
	}
	return out, nil
}

// TotalBytes sums the catalog's sizes.
func TotalBytes(c []Model) int64 {
	var n int64
	for _, m := range c {
		n += m.Bytes
	}
	return n
}

// Request is one line of a trace.
type Request struct {
	Seq       int64
	AtMs      float64
	Warmup    bool
	Model     string
	Version   int64
	Code      string
	LatencyMs float64
}

// MaxTraceLine bounds one trace line.
const MaxTraceLine = 4096

// ReadTrace parses a trace written by loadtest run --trace (loadtest.TraceHeader
// columns) and returns its requests sorted by sequence number.
func ReadTrace(r io.Reader) ([]Request, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxTraceLine)
	var out []Request
	line := 0
	for sc.Scan() {
		line++
		t := sc.Text()
		if line == 1 {
			if !strings.HasPrefix(t, "seq\t") {
				return nil, fmt.Errorf("fleet: trace line 1: want the header (seq\\tat_ms\\t...), got %.60q", t)
			}
			continue
		}
		f := strings.Split(t, "\t")
		if len(f) != 7 {
			return nil, fmt.Errorf("fleet: trace line %d: %d fields, want 7", line, len(f))
		}
		var q Request
		var err error
		var errs []error
		if q.Seq, err = strconv.ParseInt(f[0], 10, 64); err != nil || q.Seq < 0 {
			errs = append(errs, fmt.Errorf("seq %q", f[0]))
		}
		if q.AtMs, err = strconv.ParseFloat(f[1], 64); err != nil || math.IsNaN(q.AtMs) {
			errs = append(errs, fmt.Errorf("at_ms %q", f[1]))
		}
		switch f[2] {
		case "0":
		case "1":
			q.Warmup = true
		default:
			errs = append(errs, fmt.Errorf("warmup %q (want 0 or 1)", f[2]))
		}
		if q.Model = f[3]; q.Model == "" {
			errs = append(errs, errors.New("empty model"))
		}
		if q.Version, err = strconv.ParseInt(f[4], 10, 64); err != nil {
			errs = append(errs, fmt.Errorf("version %q", f[4]))
		}
		q.Code = f[5]
		if q.LatencyMs, err = strconv.ParseFloat(f[6], 64); err != nil || math.IsNaN(q.LatencyMs) {
			errs = append(errs, fmt.Errorf("latency_ms %q", f[6]))
		}
		if len(errs) > 0 {
			return nil, fmt.Errorf("fleet: trace line %d: %w", line, errors.Join(errs...))
		}
		out = append(out, q)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("fleet: trace line %d: %w", line+1, err)
	}
	if line == 0 {
		return nil, errors.New("fleet: empty trace (no header)")
	}
	slices.SortFunc(out, func(a, b Request) int { return cmp.Compare(a.Seq, b.Seq) })
	for i := 1; i < len(out); i++ {
		if out[i].Seq == out[i-1].Seq {
			return nil, fmt.Errorf("fleet: trace has request %d twice", out[i].Seq)
		}
	}
	return out, nil
}

// Counts are the measured (post-warm-up) requests per model.
func Counts(trace []Request) map[string]int64 {
	out := map[string]int64{}
	for _, q := range trace {
		if !q.Warmup {
			out[q.Model]++
		}
	}
	return out
}

// Assignment is a static placement: per host, the models it holds.
type Assignment struct {
	Hosts [][]string
	Used  []int64
}

// Holds is the set of models the assignment holds on any host.
func (a Assignment) Holds() map[string]bool {
	out := map[string]bool{}
	for _, h := range a.Hosts {
		for _, m := range h {
			out[m] = true
		}
	}
	return out
}

// Oracle places the models with measured requests by requests per byte, most
// first (ties: smaller first, then by name), each on the host with the most room
// that holds it; a model that fits nowhere is skipped and the next tried.
func Oracle(catalog []Model, counts map[string]int64, capacity []int64) Assignment {
	type cand struct {
		m Model
		n int64
	}
	var cs []cand
	for _, m := range catalog {
		if n := counts[m.Name]; n > 0 {
			cs = append(cs, cand{m, n})
		}
	}
	slices.SortFunc(cs, func(a, b cand) int {
		// a.n/a.bytes > b.n/b.bytes, exactly, in 128 bits would be nicer; float64 is
		// exact enough for counts and sizes below 2^53.
		ra, rb := float64(a.n)/float64(a.m.Bytes), float64(b.n)/float64(b.m.Bytes)
		if c := cmp.Compare(rb, ra); c != 0 {
			return c
		}
		if c := cmp.Compare(a.m.Bytes, b.m.Bytes); c != 0 {
			return c
		}
		return strings.Compare(a.m.Name, b.m.Name)
	})
	a := newAssignment(len(capacity))
	for _, c := range cs {
		best := -1
		for h := range capacity {
			room := capacity[h] - a.Used[h]
			if room >= c.m.Bytes && (best < 0 || room > capacity[best]-a.Used[best]) {
				best = h
			}
		}
		if best >= 0 {
			a.add(best, c.m)
		}
	}
	return a
}

// Random fills the same capacity with a seeded random static assignment: models
// in random order, each onto a random host with room, until the catalog is
// exhausted.
func Random(catalog []Model, capacity []int64, seed uint64) Assignment {
	rng := rand.New(rand.NewPCG(seed, 0x72616e646f6d))
	order := rng.Perm(len(catalog))
	a := newAssignment(len(capacity))
	hosts := make([]int, len(capacity))
	for _, i := range order {
		m := catalog[i]
		for j := range hosts {
			hosts[j] = j
		}
		rng.Shuffle(len(hosts), func(x, y int) { hosts[x], hosts[y] = hosts[y], hosts[x] })
		for _, h := range hosts {
			if capacity[h]-a.Used[h] >= m.Bytes {
				a.add(h, m)
				break
			}
		}
	}
	return a
}

func newAssignment(hosts int) Assignment {
	return Assignment{Hosts: make([][]string, hosts), Used: make([]int64, hosts)}
}

func (a *Assignment) add(h int, m Model) {
	a.Hosts[h] = append(a.Hosts[h], m.Name)
	a.Used[h] += m.Bytes
}

// Share is a warm share over the measured requests.
type Share struct {
	Warm, Total int64
}

// Fraction is Warm/Total (0 with no requests).
func (s Share) Fraction() float64 {
	if s.Total == 0 {
		return 0
	}
	return float64(s.Warm) / float64(s.Total)
}

// WarmShare counts the measured requests whose model the set holds.
func WarmShare(holds map[string]bool, trace []Request) Share {
	var s Share
	for _, q := range trace {
		if q.Warmup {
			continue
		}
		s.Total++
		if holds[q.Model] {
			s.Warm++
		}
	}
	return s
}

// FirstTouches counts the measured requests that are the first request for their
// model in the whole trace (warm-up included): a placement that loads on demand
// and starts empty cannot serve those warm, whatever its policy; a static
// baseline does not pay them.
func FirstTouches(trace []Request) int64 {
	seen := map[string]bool{}
	var n int64
	for _, q := range trace {
		if !seen[q.Model] {
			seen[q.Model] = true
			if !q.Warmup {
				n++
			}
		}
	}
	return n
}
