package placement

import (
	"math"
	"sort"

	"github.com/cespare/xxhash/v2"
)

// Weighted rendezvous (highest-random-weight) hashing.
//
// Every (host, version) pair gets a pseudo-random u in (0, 1) from a fixed hash of
// the host ID and the version key, the same in every process and release. A host's
// score for a version is -w / ln(u) with w the host's weight (Schindelhauer and
// Schomaker, "Weighted distributed hash tables", 2005): the host with the highest
// score is the version's first candidate, the next its second, and so on. Each
// host is first candidate for a share of versions proportional to its weight, and
// removing a host only changes the rankings of versions it was ranked above, so
// about 1/N of first candidates move when one of N hosts leaves or joins.
//
// When every host of a pool has the same weight the score is monotonic in u, so
// ranks are computed from the hash alone, without a logarithm.
//
// dgryski/go-rendezvous was considered: it is unweighted and returns only the
// top node, while placement needs weights (hosts of different sizes) and the whole
// ranking (overflow to the next candidate, several copies, explanations).

// mix64 is the splitmix64 finalizer: a bijection that spreads every input bit.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// keyHash is the stable hash of a version key.
func keyHash(k Key) uint64 {
	return mix64(xxhash.Sum64String(k.Model) ^ mix64(uint64(k.Version)+0x9e3779b97f4a7c15))
}

// hostSeed is the stable hash of a host ID.
func hostSeed(id string) uint64 { return mix64(xxhash.Sum64String(id) + 0x632be59bd9b4e019) }

// pairHash combines the two.
func pairHash(kh, hs uint64) uint64 { return mix64(kh ^ hs) }

// unit maps a hash to (0, 1), never 0 or 1.
func unit(h uint64) float64 { return (float64(h>>11) + 0.5) / (1 << 53) }

// score is the weighted rendezvous score.
func score(h uint64, w float64) float64 { return -w / math.Log(unit(h)) }

// ring is the hosts of one pool, sorted by ID, with their seeds and weights.
type ring struct {
	hosts   []int // indexes into the decision's host table
	seeds   []uint64
	weights []float64
	uniform bool
}

// rankEntry is one host's place in a version's ranking.
type rankEntry struct {
	host  int // host table index
	hash  uint64
	score float64
}

// rank fills buf with the pool's hosts, best candidate first, and returns it.
func (r *ring) rank(kh uint64, buf []rankEntry) []rankEntry {
	buf = buf[:0]
	for i, h := range r.hosts {
		ph := pairHash(kh, r.seeds[i])
		e := rankEntry{host: h, hash: ph}
		if !r.uniform {
			e.score = score(ph, r.weights[i])
		}
		buf = append(buf, e)
	}
	// Insertion sort: pools are tens of hosts, and it does not allocate.
	for i := 1; i < len(buf); i++ {
		for j := i; j > 0 && r.better(buf[j], buf[j-1]); j-- {
			buf[j], buf[j-1] = buf[j-1], buf[j]
		}
	}
	return buf
}

func (r *ring) better(a, b rankEntry) bool {
	if r.uniform {
		if a.hash != b.hash {
			return a.hash > b.hash // -w/ln(u) grows with u
		}
		return a.host < b.host
	}
	if a.score != b.score {
		return a.score > b.score
	}
	return a.host < b.host
}

// Rank returns host IDs in rendezvous order for one version, best first, with
// hosts weighted as given (0 weights count as 1). It is the function the policy
// uses, exported for tools and tests.
func Rank(k Key, hostIDs []string, weights []float64) []string {
	idx := make([]int, len(hostIDs))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return hostIDs[idx[a]] < hostIDs[idx[b]] })
	r := ring{uniform: true}
	for _, i := range idx {
		w := 1.0
		if i < len(weights) && weights[i] > 0 {
			w = weights[i]
		}
		r.hosts = append(r.hosts, i)
		r.seeds = append(r.seeds, hostSeed(hostIDs[i]))
		r.weights = append(r.weights, w)
	}
	r.setUniform()
	out := make([]string, 0, len(hostIDs))
	for _, e := range r.rank(keyHash(k), nil) {
		out = append(out, hostIDs[e.host])
	}
	return out
}

func (r *ring) setUniform() {
	r.uniform = true
	for _, w := range r.weights {
		if w != r.weights[0] {
			r.uniform = false
			return
		}
	}
}
