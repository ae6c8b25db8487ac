package hosts

import (
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

type versionKey struct {
	model   string
	version int64
}

// Readiness is an immutable view of which model versions are AVAILABLE on which
// hosts, built from discovery, GetModelStatus polling and ejections. It also carries
// the picker tables the request path reads without locks. Safe for concurrent use.
type Readiness struct {
	// pick: pool -> key -> hosts reporting the key AVAILABLE (ejected included;
	// the request path checks ejection itself, so expiry needs no rebuild).
	table map[string]map[versionKey][]*host
	// ready: key -> sorted addresses AVAILABLE and not ejected, across pools.
	ready map[versionKey][]string
	// readyPools: key -> pools with at least one such host.
	readyPools map[versionKey][]string
	// ejectedAvail: key -> sorted addresses AVAILABLE but ejected.
	ejectedAvail map[versionKey][]string
	// unassigned: key -> sorted addresses AVAILABLE but no longer assigned the
	// key by placement (draining before their unload): not routed to.
	unassigned map[versionKey][]string
	// versions: model -> sorted versions AVAILABLE on some non-ejected host.
	versions map[string][]int64
	// poolSizes: pool -> number of discovered hosts.
	poolSizes map[string]int
	ejectedN  map[string]int
	entries   int
	// nextExpiry is the earliest ejection end after the build (unix nanos, 0 none).
	nextExpiry int64
}

func emptyReadiness() *Readiness {
	return &Readiness{
		table: map[string]map[versionKey][]*host{}, ready: map[versionKey][]string{},
		readyPools: map[versionKey][]string{}, ejectedAvail: map[versionKey][]string{}, unassigned: map[versionKey][]string{},
		versions: map[string][]int64{}, poolSizes: map[string]int{}, ejectedN: map[string]int{},
	}
}

// buildReadiness builds a snapshot. members: pool -> addrs; hosts: addr -> host.
// Called with the manager's mutex held (it reads host.avail).
func buildReadiness(members map[string][]string, hosts map[string]*host, now time.Time) *Readiness {
	return buildReadinessPlaced(members, hosts, now, nil)
}

// buildReadinessPlaced is buildReadiness with placement's view: unrouted(addr, k)
// true leaves k on addr out of the routing tables (the host AVAILABLE with k, but
// no longer assigned it: its unload is coming). nil: every AVAILABLE copy counts.
func buildReadinessPlaced(members map[string][]string, hosts map[string]*host, now time.Time, unrouted func(addr string, k versionKey) bool) *Readiness {
	r := emptyReadiness()
	nowN := now.UnixNano()
	readySet := map[versionKey]map[string]bool{}
	ejSet := map[versionKey]map[string]bool{}
	unSet := map[versionKey]map[string]bool{}
	for pool, addrs := range members {
		tbl := map[versionKey][]*host{}
		r.table[pool] = tbl
		r.poolSizes[pool] = len(addrs)
		for _, a := range addrs {
			h := hosts[a]
			if h == nil {
				continue
			}
			until := h.ejectedUntil.Load()
			ej := until > nowN
			if ej {
				r.ejectedN[pool]++
				if r.nextExpiry == 0 || until < r.nextExpiry {
					r.nextExpiry = until
				}
			}
			for model, vs := range h.avail {
				for _, v := range vs {
					k := versionKey{model, v}
					if unrouted != nil && unrouted(a, k) {
						if unSet[k] == nil {
							unSet[k] = map[string]bool{}
						}
						unSet[k][a] = true
						continue
					}
					tbl[k] = append(tbl[k], h)
					set := readySet
					if ej {
						set = ejSet
					}
					if set[k] == nil {
						set[k] = map[string]bool{}
					}
					set[k][a] = true
					if !ej && !slices.Contains(r.readyPools[k], pool) {
						r.readyPools[k] = append(r.readyPools[k], pool)
					}
				}
			}
		}
	}
	for k, set := range readySet {
		r.ready[k] = sortedKeys(set)
		r.entries += len(set)
		r.versions[k.model] = append(r.versions[k.model], k.version)
	}
	for k, set := range ejSet {
		r.ejectedAvail[k] = sortedKeys(set)
	}
	for k, set := range unSet {
		r.unassigned[k] = sortedKeys(set)
	}
	for m := range r.versions {
		slices.Sort(r.versions[m])
	}
	for k := range r.readyPools {
		slices.Sort(r.readyPools[k])
	}
	return r
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// sameView reports whether two snapshots say the same to a router: the same
// non-ejected hosts for every version.
func sameView(a, b *Readiness) bool {
	if a == nil || b == nil || len(a.ready) != len(b.ready) {
		return false
	}
	for k, x := range a.ready {
		if !slices.Equal(x, b.ready[k]) || !slices.Equal(a.readyPools[k], b.readyPools[k]) {
			return false
		}
	}
	return true
}

// Hosts returns the addresses, across all pools, of the healthy (not ejected)
// hosts that report the version AVAILABLE, sorted. Do not modify the result.
func (r *Readiness) Hosts(model string, version int64) []string {
	return r.ready[versionKey{model, version}]
}

// Available reports whether a healthy host in one of pools reports the version
// AVAILABLE: the condition for routing traffic to it (invariant 2).
func (r *Readiness) Available(model string, version int64, pools []string) bool {
	for _, p := range r.readyPools[versionKey{model, version}] {
		if slices.Contains(pools, p) {
			return true
		}
	}
	return false
}

// Versions returns the versions of model AVAILABLE on some healthy host, ascending.
func (r *Readiness) Versions(model string) []int64 { return r.versions[model] }

// Entries is the number of (host, model, version) AVAILABLE entries.
func (r *Readiness) Entries() int { return r.entries }

// Explain says why the version is not routable in pools, or "" when it is.
func (r *Readiness) Explain(model string, version int64, pools []string) string {
	if r.Available(model, version, pools) {
		return ""
	}
	k := versionKey{model, version}
	var sizes []string
	for _, p := range pools {
		n, ok := r.poolSizes[p]
		if !ok {
			sizes = append(sizes, fmt.Sprintf("%s: unknown pool", p))
			continue
		}
		sizes = append(sizes, fmt.Sprintf("%s: %d hosts, %d ejected", p, n, r.ejectedN[p]))
	}
	msg := fmt.Sprintf("model %q version %d is AVAILABLE on no healthy host in pools [%s] (%s)",
		model, version, strings.Join(pools, ", "), strings.Join(sizes, "; "))
	if ej := r.ejectedAvail[k]; len(ej) > 0 {
		msg += fmt.Sprintf("; AVAILABLE but ejected after failures: %s", strings.Join(ej, ", "))
	}
	if un := r.unassigned[k]; len(un) > 0 {
		msg += fmt.Sprintf("; AVAILABLE but no longer assigned by placement (draining before the unload): %s", strings.Join(un, ", "))
	}
	if hs := r.ready[k]; len(hs) > 0 {
		msg += fmt.Sprintf("; AVAILABLE in other pools on %s", strings.Join(hs, ", "))
	}
	return msg
}

// pick chooses a host for key among pools in preference order: the first pool with
// an eligible host (AVAILABLE, not ejected, not tried) wins, and within it the less
// loaded of two random candidates (power of two choices). When every AVAILABLE host
// is ejected, ejected ones are tried rather than failing (panic routing). It returns
// nil and whether any host at all has the key.
func (r *Readiness) pick(pools []string, k versionKey, tried []*host, now int64, randN func(int) int) (*host, bool) {
	any := false
	for pass := 0; pass < 2; pass++ {
		allowEjected := pass == 1
		for _, p := range pools {
			list := r.table[p][k]
			if len(list) > 0 {
				any = true
			}
			n := 0
			for _, h := range list {
				if eligible(h, tried, now, allowEjected) {
					n++
				}
			}
			if n == 0 {
				continue
			}
			if n == 1 {
				return nth(list, tried, now, allowEjected, 0), true
			}
			i := randN(n)
			j := randN(n - 1)
			if j >= i {
				j++
			}
			a := nth(list, tried, now, allowEjected, i)
			b := nth(list, tried, now, allowEjected, j)
			if b.outstanding.Load() < a.outstanding.Load() {
				return b, true
			}
			return a, true
		}
		if !any {
			return nil, false
		}
	}
	return nil, any
}

func eligible(h *host, tried []*host, now int64, allowEjected bool) bool {
	if !allowEjected && h.ejectedUntil.Load() > now {
		return false
	}
	for _, t := range tried {
		if t == h {
			return false
		}
	}
	return true
}

func nth(list []*host, tried []*host, now int64, allowEjected bool, i int) *host {
	for _, h := range list {
		if eligible(h, tried, now, allowEjected) {
			if i == 0 {
				return h
			}
			i--
		}
	}
	return nil
}

// readinessPtr is the lock-free holder of the current snapshot.
type readinessPtr = atomic.Pointer[Readiness]

// AvailableHosts is Hosts under the name the gateway's route.State uses.
func (r *Readiness) AvailableHosts(model string, version int64) []string {
	return r.Hosts(model, version)
}
