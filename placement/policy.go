package placement

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"sort"
	"time"
)

// State is what a decision did with one version.
type State uint8

// States.
const (
	// Placed: on as many hosts as wanted.
	Placed State = iota + 1
	// Partial: on at least one host but fewer than wanted (no room for more).
	Partial
	// Pending: wanted but on no host: no room that may be taken now (every
	// candidate is full of versions that are pinned, required, younger than their
	// minimum residency, or more recently used), or every candidate is in
	// load-failure backoff.
	Pending
	// Evicted: was placed, lost its last copy to a more recently used version.
	Evicted
	// Unplaceable: can never be placed as things are: larger than every host of its
	// pool, no size known, or a pool with no hosts.
	Unplaceable
)

func (s State) String() string {
	switch s {
	case Placed:
		return "placed"
	case Partial:
		return "partial"
	case Pending:
		return "pending"
	case Evicted:
		return "evicted"
	case Unplaceable:
		return "unplaceable"
	}
	return "unknown"
}

// MarshalText writes the state's name.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a state's name.
func (s *State) UnmarshalText(b []byte) error {
	for c := Placed; c <= Unplaceable; c++ {
		if c.String() == string(b) {
			*s = c
			return nil
		}
	}
	return fmt.Errorf("placement: unknown state %q", b)
}

// VersionState is the decision for one version, with the inputs that drove it.
type VersionState struct {
	Key
	Pool string
	// Bytes is the resident size counted; Reported says whether a host measured it
	// (else it is object bytes x memory multiplier).
	Bytes    int64
	Reported bool
	Rate     float64
	LastUsed time.Time
	// Want is the number of copies the policy aims for.
	Want int
	// Pinned and Required (the routing reasons, "" if none) protect it from eviction.
	Pinned   bool
	Required string
	// Hosts are the hosts it is assigned to, best rank first; Draining ones (a
	// subset) are old copies kept until their replacement reports loaded.
	Hosts    []string
	Draining []string
	State    State
	// Why explains a state other than Placed.
	Why string
}

// ProblemKind classifies a Problem.
type ProblemKind uint8

// Problem kinds.
const (
	// HostNoCapacity: a host without tfgate_capacity_bytes (or <= 0) takes nothing.
	HostNoCapacity ProblemKind = iota + 1
	// HostDuplicate: two hosts with one ID; the first is used.
	HostDuplicate
	// BadCatalogEntry: a catalog entry without a usable size.
	BadCatalogEntry
	// RequiredUnknown: the routing config needs a version the catalog lacks.
	RequiredUnknown
	// RequiredNotResident: a pinned or routed version has fewer copies than wanted.
	RequiredNotResident
	// HostFrozen: a host takes no new copies (its status is stale).
	HostFrozen
	// VersionTooLarge: a version needs more memory than the largest host of its pool.
	VersionTooLarge
)

func (k ProblemKind) String() string {
	switch k {
	case HostNoCapacity:
		return "host_no_capacity"
	case HostDuplicate:
		return "host_duplicate"
	case BadCatalogEntry:
		return "bad_catalog_entry"
	case RequiredUnknown:
		return "required_unknown"
	case RequiredNotResident:
		return "required_not_resident"
	case HostFrozen:
		return "host_frozen"
	case VersionTooLarge:
		return "version_too_large"
	}
	return "unknown"
}

// MarshalText writes the kind's name.
func (k ProblemKind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText reads a kind's name.
func (k *ProblemKind) UnmarshalText(b []byte) error {
	for c := HostNoCapacity; c <= VersionTooLarge; c++ {
		if c.String() == string(b) {
			*k = c
			return nil
		}
	}
	return fmt.Errorf("placement: unknown problem kind %q", b)
}

// Problem is something the controller must say out loud (log, count, ListPlacement)
// rather than hide.
type Problem struct {
	Kind    ProblemKind
	Host    string
	Key     Key
	Message string
}

// Stats counts what a decision changed relative to the previous assignment.
type Stats struct {
	Versions int // versions considered (required, demanded or previously placed)
	Placed   int // versions with at least one copy
	Copies   int // host entries
	Kept     int // copies kept from the previous assignment
	Added    int // copies new in this decision
	Removed  int // previous copies dropped (evicted, scaled down, host gone, backoff, out of catalog)
	Moved    int // rebalancing moves started (make-before-break)
	Evicted  int // versions that lost their last copy to least-recent-use eviction
	Pending  int // versions in state Pending, Partial or Unplaceable
	// PendingRequired counts pinned or routed versions short of copies.
	PendingRequired int
	// UnknownDemand counts demand reports for versions not in the catalog (ignored).
	UnknownDemand int
}

// Decision is the result of Decide: the assignment and why.
type Decision struct {
	Assignment Assignment
	// Versions holds every version considered, sorted by key.
	Versions []VersionState
	Problems []Problem
	Stats    Stats

	// For Explain.
	hosts []hostState
	pools map[string]*poolState
	fail  map[hostKey]Failure
	now   time.Time

	whyCache map[whyKey]string
	pick     []int // victims' scratch
}

type hostKey struct {
	host int
	key  Key
}

type hostState struct {
	id       string
	pool     string
	cap      int64
	used     int64
	eligible bool
	frozen   bool        // keeps its copies, takes no new ones
	evict    []evictCand // built lazily, least requested per byte first
	evictPos int         // evict[:evictPos] are all taken
}

type evictCand struct {
	v        int32
	density  float64 // requests/s per byte
	lastUsed int64
	taken    bool
}

type poolState struct {
	name   string
	cfg    PoolConfig
	ring   ring
	maxCap int64
}

type hostCopy struct {
	host     int
	since    time.Time
	draining bool
	prev     bool
	// frozen: on a frozen host, kept but not counted as a copy (nothing says it
	// is loaded, nor will be), so the version gets its copies elsewhere.
	frozen bool
}

type vstate struct {
	key      Key
	kh       uint64
	pool     *poolState
	poolName string
	object   int64
	size     int64
	reported bool
	rate     float64
	lastUsed time.Time
	class    uint8 // 0 pinned, 1 required, 2 other
	reason   string
	minCop   int
	want     int
	prev     []hostCopy
	copies   []hostCopy
	state    State
	why      string
	noPlace  bool // evicted in this decision: not re-placed by it
}

const (
	classPinned   = 0
	classRequired = 1
	classOther    = 2
)

// Decide computes the assignment for a snapshot. It is pure and deterministic:
// the same Input gives the same Decision, whatever map iteration order is; it
// does no I/O and does not modify in.
func Decide(in Input) (*Decision, error) {
	cfg := in.Config.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	now := in.Now
	d := &Decision{pools: map[string]*poolState{}, now: now}

	// Hosts, sorted by ID.
	hs := slices.Clone(in.Hosts)
	slices.SortStableFunc(hs, func(a, b Host) int { return cmp.Compare(a.ID, b.ID) })
	hostIdx := make(map[string]int, len(hs))
	accepted := hs[:0:0]
	for _, h := range hs {
		if _, dup := hostIdx[h.ID]; dup {
			d.Problems = append(d.Problems, Problem{Kind: HostDuplicate, Host: h.ID,
				Message: fmt.Sprintf("host %q is listed twice; using the first", h.ID)})
			continue
		}
		pool := h.Pool
		if pool == "" {
			pool = cfg.DefaultPool
		}
		st := hostState{id: h.ID, pool: pool, cap: h.CapacityBytes, eligible: h.CapacityBytes > 0, frozen: h.Frozen}
		if st.eligible && st.frozen {
			d.Problems = append(d.Problems, Problem{Kind: HostFrozen, Host: h.ID,
				Message: fmt.Sprintf("host %q takes no new versions and its copies are not counted (each gets a copy elsewhere): its sidecar has not reported recently; it keeps what it has", h.ID)})
		}
		if !st.eligible {
			d.Problems = append(d.Problems, Problem{Kind: HostNoCapacity, Host: h.ID,
				Message: fmt.Sprintf("host %q has no capacity (service meta tfgate_capacity_bytes missing or <= 0); it is assigned nothing", h.ID)})
		}
		hostIdx[h.ID] = len(d.hosts)
		d.hosts = append(d.hosts, st)
		accepted = append(accepted, h)
		p := d.pools[pool]
		if p == nil {
			p = &poolState{name: pool, cfg: cfg.Pool(pool)}
			d.pools[pool] = p
		}
		if st.eligible {
			p.maxCap = max(p.maxCap, st.cap)
		}
	}
	for i, h := range accepted {
		st := &d.hosts[i]
		if !st.eligible {
			continue
		}
		p := d.pools[st.pool]
		w := h.Weight
		if w <= 0 {
			w = float64(h.CapacityBytes) / float64(p.maxCap)
		}
		p.ring.hosts = append(p.ring.hosts, i)
		p.ring.seeds = append(p.ring.seeds, hostSeed(h.ID))
		p.ring.weights = append(p.ring.weights, w)
	}
	for _, p := range d.pools {
		p.ring.setUniform()
	}

	// Load-failure backoffs still in force.
	d.fail = make(map[hostKey]Failure, len(in.Failures))
	for _, f := range in.Failures {
		hi, ok := hostIdx[f.Host]
		if !ok || !f.Until.After(now) {
			continue
		}
		hk := hostKey{hi, f.Key}
		if old, ok := d.fail[hk]; !ok || f.Until.After(old.Until) {
			d.fail[hk] = f
		}
	}

	// Catalog and measured sizes.
	catalog := make(map[Key]int64, len(in.Catalog))
	for _, c := range in.Catalog {
		if _, dup := catalog[c.Key]; !dup {
			catalog[c.Key] = c.ObjectBytes
		}
	}
	reported := make(map[Key]int64, len(in.Resident))
	loaded := make(map[hostKey]struct{}, len(in.Resident))
	for _, r := range in.Resident {
		if hi, ok := hostIdx[r.Host]; ok {
			loaded[hostKey{hi, r.Key}] = struct{}{}
		}
		if r.Bytes > reported[r.Key] {
			reported[r.Key] = r.Bytes
		}
	}

	// The versions to consider: required, demanded, previously placed.
	nPrev := 0
	if in.Previous != nil {
		for _, ha := range in.Previous.Hosts {
			nPrev += len(ha.Entries)
		}
	}
	vindex := make(map[Key]int32, len(in.Demand)+len(in.Required)+nPrev)
	vs := make([]vstate, 0, len(in.Demand)+len(in.Required)+nPrev)
	get := func(k Key) *vstate {
		if i, ok := vindex[k]; ok {
			return &vs[i]
		}
		vindex[k] = int32(len(vs))
		vs = append(vs, vstate{key: k, class: classOther, object: catalog[k]})
		return &vs[len(vs)-1]
	}
	for _, r := range in.Required {
		if _, ok := catalog[r.Key]; !ok {
			d.Problems = append(d.Problems, Problem{Kind: RequiredUnknown, Key: r.Key,
				Message: fmt.Sprintf("%s is needed (%s) but is not in the catalog", r.Key, reasonOr(r))})
			continue
		}
		v := get(r.Key)
		c := uint8(classRequired)
		if r.Pinned {
			c = classPinned
		}
		v.class = min(v.class, c)
		v.reason = joinReason(v.reason, reasonOr(r))
		v.minCop = max(v.minCop, r.MinCopies)
	}
	for k, dm := range in.Demand {
		if _, ok := catalog[k]; !ok {
			d.Stats.UnknownDemand++
			continue
		}
		v := get(k)
		v.rate, v.lastUsed = dm.Rate, dm.LastUsed
		if !(v.rate >= 0) || math.IsInf(v.rate, 0) { // negative, NaN or infinite: a bad report
			v.rate = 0
		}
	}
	if in.Previous != nil {
		ids := make([]string, 0, len(in.Previous.Hosts))
		for id := range in.Previous.Hosts {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		prevArena := make([]hostCopy, nPrev)
		for _, id := range ids {
			hi, ok := hostIdx[id]
			for _, e := range in.Previous.Hosts[id].Entries {
				if _, inCat := catalog[e.Key]; !inCat {
					d.Stats.Removed++
					continue
				}
				if !ok {
					hi = -1 // host gone: the copy is re-placed
				}
				v := get(e.Key)
				if v.prev == nil {
					v.prev, prevArena = prevArena[:0:1], prevArena[1:]
				}
				v.prev = append(v.prev, hostCopy{host: hi, since: e.Since, draining: e.Draining, prev: true})
			}
		}
	}

	// Per version: pool, size, priority, copies wanted.
	for i := range vs {
		v := &vs[i]
		v.kh = keyHash(v.key)
		v.poolName = cfg.DefaultPool
		if p, ok := in.ModelPools[v.key.Model]; ok && p != "" {
			v.poolName = p
		}
		v.pool = d.pools[v.poolName]
		pc := cfg.Pool(v.poolName)
		if b := reported[v.key]; b > 0 {
			v.size, v.reported = b, true
		} else if v.object > 0 {
			// An absurd object size (past int64 once multiplied) is too large, not
			// an overflow to a negative size.
			v.size = math.MaxInt64
			if f := math.Ceil(float64(v.object) * pc.MemoryMultiplier); f < math.MaxInt64 {
				v.size = int64(f)
			}
		}
		if v.lastUsed.IsZero() {
			for _, c := range v.prev {
				if c.since.After(v.lastUsed) {
					v.lastUsed = c.since
				}
			}
		}
		prevCopies := 0
		for _, c := range v.prev {
			if !c.draining && (c.host < 0 || !d.hosts[c.host].frozen) {
				prevCopies++
			}
		}
		eligible := 0
		if v.pool != nil {
			eligible = len(v.pool.ring.hosts)
		}
		v.want = wantCopies(pc, v.rate, prevCopies, v.minCop, eligible)
		switch {
		case v.pool == nil || eligible == 0:
			v.state, v.why = Unplaceable, fmt.Sprintf("pool %q has no hosts with capacity", v.poolName)
		case v.size <= 0:
			v.state, v.why = Unplaceable, fmt.Sprintf("no size known: catalog object size %d and no host reported one", v.object)
			d.Problems = append(d.Problems, Problem{Kind: BadCatalogEntry, Key: v.key,
				Message: fmt.Sprintf("%s has no usable object size in the catalog (%d bytes); it cannot be placed until its object is listed with a size", v.key, v.object)})
		case v.size > v.pool.maxCap:
			v.state, v.why = Unplaceable, fmt.Sprintf("needs %d bytes; the largest host in pool %q has %d", v.size, v.poolName, v.pool.maxCap)
			d.Problems = append(d.Problems, Problem{Kind: VersionTooLarge, Key: v.key,
				Message: fmt.Sprintf("%s needs %d bytes (%s), more than the largest host in pool %q (%d bytes); it cannot be placed until a larger host joins",
					v.key, v.size, sizeSource(v, pc), v.poolName, v.pool.maxCap)})
		}
	}

	order := make([]int32, len(vs))
	for i := range order {
		order[i] = int32(i)
	}
	// Priority: pinned, then required, then by demand: request rate, then
	// recency (equal rates, e.g. none reported: least recently used last).
	slices.SortFunc(order, func(a, b int32) int {
		va, vb := &vs[a], &vs[b]
		if va.class != vb.class {
			return cmp.Compare(va.class, vb.class)
		}
		if va.rate != vb.rate {
			return cmp.Compare(vb.rate, va.rate)
		}
		if c := vb.lastUsed.Compare(va.lastUsed); c != 0 {
			return c
		}
		if va.key.Model != vb.key.Model {
			return cmp.Compare(va.key.Model, vb.key.Model)
		}
		return cmp.Compare(va.key.Version, vb.key.Version)
	})

	var rbuf []rankEntry
	rankPos := func(v *vstate) map[int]int {
		rbuf = v.pool.ring.rank(v.kh, rbuf)
		m := make(map[int]int, len(rbuf))
		for i, e := range rbuf {
			m[e.host] = i
		}
		return m
	}

	// Pass 1: keep previous copies that are still valid, highest priority first.
	arenaN := 0
	for i := range vs {
		arenaN += vs[i].want + 1
	}
	arena := make([]hostCopy, arenaN)
	off := 0
	for i := range vs {
		n := vs[i].want + 1
		vs[i].copies = arena[off : off : off+n]
		off += n
	}
	var scratch []hostCopy
	for _, vi := range order {
		v := &vs[vi]
		if v.state == Unplaceable {
			d.Stats.Removed += len(v.prev)
			continue
		}
		valid := scratch[:0]
		var frozen []hostCopy
		for _, c := range v.prev {
			if c.host < 0 || d.hosts[c.host].pool != v.poolName || !d.hosts[c.host].eligible {
				d.Stats.Removed++
				continue
			}
			if _, bad := d.fail[hostKey{c.host, v.key}]; bad {
				d.Stats.Removed++
				continue
			}
			if d.hosts[c.host].frozen {
				// Kept as it is (nothing is unloaded for lack of an answer), not
				// counted: the version's copies are placed elsewhere.
				c.frozen = true
				frozen = append(frozen, c)
				continue
			}
			valid = append(valid, c)
		}
		if len(valid) > v.want {
			pos := rankPos(v)
			slices.SortStableFunc(valid, func(a, b hostCopy) int { return cmp.Compare(pos[a.host], pos[b.host]) })
			keep := valid[:v.want]
			loadedKept := 0
			for i := range keep {
				keep[i].draining = false
				if _, ok := loaded[hostKey{keep[i].host, v.key}]; ok {
					loadedKept++
				}
			}
			// Make-before-break: an extra copy that is loaded stays, draining,
			// until as many kept copies report loaded.
			for _, c := range valid[v.want:] {
				if _, ok := loaded[hostKey{c.host, v.key}]; ok && loadedKept < v.want {
					c.draining = true
					keep = append(keep, c)
					loadedKept++
					continue
				}
				d.Stats.Removed++
			}
			valid = keep
		} else {
			for i := range valid {
				valid[i].draining = false
			}
		}
		valid = append(valid, frozen...)
		for _, c := range valid {
			h := &d.hosts[c.host]
			if h.used+v.size > h.cap {
				d.Stats.Removed++
				v.why = fmt.Sprintf("no longer fits on %s (%d bytes; sizes grew or capacity shrank), higher-priority versions kept", h.id, v.size)
				continue
			}
			h.used += v.size
			v.copies = append(v.copies, c)
			d.Stats.Kept++
		}
		scratch = valid[:0]
	}

	// Pass 2: place missing copies; evict least recently used if needed.
	evictReady := false
	for _, vi := range order {
		v := &vs[vi]
		if v.state == Unplaceable || v.noPlace {
			continue
		}
		need := v.want - v.active()
		if need <= 0 {
			continue
		}
		rbuf = v.pool.ring.rank(v.kh, rbuf)
		ranks := rbuf
		for ; need > 0; need-- {
			placed := false
			for _, e := range ranks {
				if v.on(e.host) || d.backoff(e.host, v.key) || d.hosts[e.host].frozen {
					continue
				}
				h := &d.hosts[e.host]
				if h.used+v.size <= h.cap {
					d.add(v, e.host, now)
					placed = true
					break
				}
			}
			if placed {
				continue
			}
			if !evictReady {
				d.buildEvict(vs, now)
				evictReady = true
			}
			best, bestCost := -1, evictCost{rate: math.Inf(1)}
			for _, e := range ranks {
				if v.on(e.host) || d.backoff(e.host, v.key) || d.hosts[e.host].frozen {
					continue
				}
				if c, ok := d.canEvict(vs, e.host, v); ok && c.less(bestCost) {
					best, bestCost = e.host, c
				}
			}
			if best < 0 {
				break
			}
			d.evictFor(vs, best, v, now)
			d.add(v, best, now)
		}
		if need > 0 {
			if short := d.whyShort(vs, v, ranks); v.why == "" {
				v.why = short
			} else {
				v.why += "; " + short
			}
		}
	}

	// Pass 3: rebalance copies that are not on one of their best-ranked hosts
	// (a host joined, or room opened at home), make-before-break, bounded.
	budget := cfg.MaxMoves
	var homeBuf []rankEntry
	for _, vi := range order {
		if budget <= 0 {
			break
		}
		v := &vs[vi]
		if v.state == Unplaceable || v.active() == 0 {
			continue
		}
		rbuf = v.pool.ring.rank(v.kh, rbuf)
		home := homeBuf[:0]
		for _, e := range rbuf {
			if len(home) == v.want {
				break
			}
			if !d.backoff(e.host, v.key) && !d.hosts[e.host].frozen {
				home = append(home, e)
			}
		}
		homeBuf = home
		for ci := 0; ci < len(v.copies) && budget > 0; ci++ {
			c := v.copies[ci]
			// A copy younger than min residency does not move yet: a version
			// that just overflowed is not loaded twice in a row.
			if c.draining || inRank(home, c.host) || now.Sub(c.since) < v.pool.cfg.MinResidency || d.hosts[c.host].frozen {
				continue
			}
			for _, e := range home {
				h := &d.hosts[e.host]
				if v.on(e.host) || h.used+v.size > h.cap {
					continue
				}
				if _, ok := loaded[hostKey{c.host, v.key}]; ok {
					v.copies[ci].draining = true
				} else {
					d.remove(v, ci)
					ci--
				}
				d.add(v, e.host, now)
				d.Stats.Moved++
				budget--
				break
			}
		}
	}

	// Output, in key order.
	byKey := make([]int32, len(vs))
	for i := range byKey {
		byKey[i] = int32(i)
	}
	slices.SortFunc(byKey, func(a, b int32) int {
		ka, kb := &vs[a].key, &vs[b].key
		if ka.Model != kb.Model {
			return cmp.Compare(ka.Model, kb.Model)
		}
		return cmp.Compare(ka.Version, kb.Version)
	})
	perHostN := make([]int, len(d.hosts))
	nCopies, nDraining := 0, 0
	for i := range vs {
		for _, c := range vs[i].copies {
			perHostN[c.host]++
			nCopies++
			if c.draining {
				nDraining++
			}
		}
	}
	perHost := make([][]Entry, len(d.hosts))
	for i, n := range perHostN {
		perHost[i] = make([]Entry, 0, n)
	}
	hostNames := make([]string, 0, nCopies)
	drainNames := make([]string, 0, nDraining)
	d.Assignment.Hosts = make(map[string]HostAssignment, len(d.hosts))
	d.Versions = make([]VersionState, 0, len(vs))
	for _, vi := range byKey {
		v := &vs[vi]
		st := VersionState{Key: v.key, Pool: v.poolName, Bytes: v.size, Reported: v.reported,
			Rate: v.rate, LastUsed: v.lastUsed, Want: v.want, Pinned: v.class == classPinned,
			Required: v.reason, State: v.state, Why: v.why}
		if v.pool != nil && len(v.copies) > 1 {
			pos := rankPos(v)
			slices.SortStableFunc(v.copies, func(a, b hostCopy) int { return cmp.Compare(pos[a.host], pos[b.host]) })
		}
		h0, d0 := len(hostNames), len(drainNames)
		for _, c := range v.copies {
			hostNames = append(hostNames, d.hosts[c.host].id)
			if c.draining {
				drainNames = append(drainNames, d.hosts[c.host].id)
			}
			perHost[c.host] = append(perHost[c.host], Entry{Key: v.key, Bytes: v.size, Since: c.since, Draining: c.draining})
		}
		if len(hostNames) > h0 {
			st.Hosts = hostNames[h0:len(hostNames):len(hostNames)]
		}
		if len(drainNames) > d0 {
			st.Draining = drainNames[d0:len(drainNames):len(drainNames)]
		}
		switch {
		case st.State == Unplaceable:
		case st.State == Evicted && len(v.copies) == 0:
		case len(v.copies) == 0:
			st.State = Pending
		case v.active() < v.want:
			st.State = Partial
		default:
			st.State, st.Why = Placed, ""
		}
		if st.State != Placed && st.State != Evicted {
			d.Stats.Pending++
			if v.class != classOther {
				d.Stats.PendingRequired++
				d.Problems = append(d.Problems, Problem{Kind: RequiredNotResident, Key: v.key,
					Message: fmt.Sprintf("%s is needed (%s) but has %d of %d copies: %s", v.key, v.reason, v.active(), v.want, st.Why)})
			}
		}
		if len(v.copies) > 0 {
			d.Stats.Placed++
		}
		d.Versions = append(d.Versions, st)
	}
	for i, h := range d.hosts {
		if !h.eligible {
			continue
		}
		d.Stats.Copies += len(perHost[i]) // already in key order
		d.Assignment.Hosts[h.id] = HostAssignment{Pool: h.pool, Entries: perHost[i]}
	}
	d.Stats.Versions = len(vs)
	slices.SortStableFunc(d.Problems, func(a, b Problem) int {
		if a.Kind != b.Kind {
			return cmp.Compare(a.Kind, b.Kind)
		}
		if a.Host != b.Host {
			return cmp.Compare(a.Host, b.Host)
		}
		if a.Key.Model != b.Key.Model {
			return cmp.Compare(a.Key.Model, b.Key.Model)
		}
		return cmp.Compare(a.Key.Version, b.Key.Version)
	})
	return d, nil
}

// sizeSource says where a version's size came from, for messages.
func sizeSource(v *vstate, pc PoolConfig) string {
	if v.reported {
		return "reported by a host"
	}
	return fmt.Sprintf("object %d bytes x memory_multiplier %g", v.object, pc.MemoryMultiplier)
}

// wantCopies is the number of copies for a request rate, with hysteresis: with p
// copies now, the count changes only when p is outside
// [ceil(r/(rate*(1+h))), ceil(r/(rate*(1-h)))], and then to ceil(r/rate); the
// result is clamped to [min_copies (or the requirement's), max_copies, hosts].
func wantCopies(pc PoolConfig, r float64, p, minCopies, hosts int) int {
	lo := max(pc.MinCopies, minCopies)
	hi := max(pc.MaxCopies, lo)
	clamp := func(n int) int { return min(max(n, lo), hi, max(hosts, 1)) }
	need := func(rate float64) int { return int(math.Ceil(r / rate)) }
	if p <= 0 {
		return clamp(need(pc.CopyRate))
	}
	low := need(pc.CopyRate * (1 + pc.Hysteresis))
	high := need(pc.CopyRate * (1 - pc.Hysteresis))
	if p >= low && p <= high {
		return clamp(p)
	}
	return clamp(need(pc.CopyRate))
}

func (v *vstate) active() int {
	n := 0
	for _, c := range v.copies {
		if !c.draining && !c.frozen {
			n++
		}
	}
	return n
}

func (v *vstate) on(host int) bool {
	for _, c := range v.copies {
		if c.host == host {
			return true
		}
	}
	return false
}

func inRank(rs []rankEntry, host int) bool {
	for _, e := range rs {
		if e.host == host {
			return true
		}
	}
	return false
}

func (d *Decision) backoff(host int, k Key) bool {
	_, ok := d.fail[hostKey{host, k}]
	return ok
}

func (d *Decision) add(v *vstate, host int, now time.Time) {
	d.hosts[host].used += v.size
	v.copies = append(v.copies, hostCopy{host: host, since: now})
	d.Stats.Added++
}

func (d *Decision) remove(v *vstate, ci int) {
	d.hosts[v.copies[ci].host].used -= v.size
	v.copies = slices.Delete(v.copies, ci, ci+1)
}

// evictable: an unpinned, unrequired copy past its minimum residency.
func (d *Decision) evictable(v *vstate, c hostCopy, now time.Time) bool {
	return v.class == classOther && !c.draining && now.Sub(c.since) >= v.pool.cfg.MinResidency
}

// buildEvict lists each host's evictable copies, least requested per byte
// first (the copies whose eviction loses the fewest requests for the room it
// makes), least recently used first among equals.
func (d *Decision) buildEvict(vs []vstate, now time.Time) {
	for i := range vs {
		v := &vs[i]
		for _, c := range v.copies {
			if d.evictable(v, c, now) {
				h := &d.hosts[c.host]
				h.evict = append(h.evict, evictCand{v: int32(i), density: v.rate / float64(max(v.size, 1)), lastUsed: v.lastUsed.UnixNano()})
			}
		}
	}
	for i := range d.hosts {
		slices.SortFunc(d.hosts[i].evict, func(a, b evictCand) int {
			if a.density != b.density {
				return cmp.Compare(a.density, b.density)
			}
			if a.lastUsed != b.lastUsed {
				return cmp.Compare(a.lastUsed, b.lastUsed)
			}
			ka, kb := vs[a.v].key, vs[b.v].key
			if ka.Model != kb.Model {
				return cmp.Compare(ka.Model, kb.Model)
			}
			return cmp.Compare(ka.Version, kb.Version)
		})
	}
}

// evictCost is what evicting a set of copies loses: their summed request rate,
// and the last use of the most recently used of them.
type evictCost struct {
	rate     float64
	lastUsed int64
}

func (c evictCost) less(o evictCost) bool {
	return c.rate < o.rate || (c.rate == o.rate && c.lastUsed < o.lastUsed)
}

// victims picks the evictable copies on host whose eviction makes room for v,
// least requested per byte first. A version placed on demand (not pinned or
// required) may take them only if they lose less than it gains: their summed
// request rate is below v's, or, all rates equal (none reported), every one of
// them was used less recently than v. So one request for a cold version evicts
// only copies less requested than it, and a hot model is never evicted for a
// model asked for once (the churn LRU alone suffers under Zipf traffic).
// With take, the victims are evicted.
func (d *Decision) victims(vs []vstate, host int, v *vstate, take bool) (evictCost, bool) {
	h := &d.hosts[host]
	free := h.cap - h.used
	var cost evictCost
	picked := d.pick[:0]
	defer func() { d.pick = picked[:0] }()
	older := true
	for i := h.evictPos; i < len(h.evict) && free < v.size; i++ {
		ec := &h.evict[i]
		w := &vs[ec.v]
		if ec.taken || !w.on(host) {
			continue
		}
		free += w.size
		cost.rate += w.rate
		cost.lastUsed = max(cost.lastUsed, ec.lastUsed)
		older = older && w.lastUsed.Before(v.lastUsed)
		picked = append(picked, i)
	}
	if free < v.size {
		return evictCost{}, false
	}
	if v.class == classOther && !(cost.rate < v.rate || (cost.rate == v.rate && older)) {
		return evictCost{}, false
	}
	if take {
		for _, i := range picked {
			h.evict[i].taken = true
			d.evictCopy(vs, host, &vs[h.evict[i].v], v)
		}
		for h.evictPos < len(h.evict) && h.evict[h.evictPos].taken {
			h.evictPos++
		}
	}
	return cost, true
}

// canEvict says whether evicting copies on host makes room for v (victims),
// and what it would lose (lower is better across the candidate hosts).
func (d *Decision) canEvict(vs []vstate, host int, v *vstate) (evictCost, bool) {
	return d.victims(vs, host, v, false)
}

func (d *Decision) evictFor(vs []vstate, host int, v *vstate, now time.Time) {
	d.victims(vs, host, v, true)
}

// evictCopy evicts w's copy on host to make room for v.
func (d *Decision) evictCopy(vs []vstate, host int, w, v *vstate) {
	h := &d.hosts[host]
	for ci, c := range w.copies {
		if c.host != host {
			continue
		}
		d.remove(w, ci)
		d.Stats.Removed++
		if c.prev {
			d.Stats.Kept--
		} else {
			d.Stats.Added--
		}
		w.noPlace = true
		w.why = fmt.Sprintf("evicted from %s (least requested per byte, then least recently used) for %s", h.id, v.key)
		if len(w.copies) == 0 {
			w.state = Evicted
			d.Stats.Evicted++
		}
		return
	}
}

// whyShort explains why v has fewer copies than it wants.
func (d *Decision) whyShort(vs []vstate, v *vstate, ranks []rankEntry) string {
	backoff, full := 0, 0
	for _, e := range ranks {
		if v.on(e.host) {
			continue
		}
		if d.backoff(e.host, v.key) || d.hosts[e.host].frozen {
			backoff++
			continue
		}
		full++
	}
	// Thousands of versions may wait at once: messages are shared, not per version.
	ck := whyKey{v.pool, backoff, full, len(ranks)}
	if s, ok := d.whyCache[ck]; ok {
		return s
	}
	var s string
	switch {
	case full == 0 && backoff > 0:
		s = fmt.Sprintf("every candidate host without it (%d) is in load-failure backoff or frozen", backoff)
	case full == 0:
		s = fmt.Sprintf("pool %q has only %d hosts", v.poolName, len(ranks))
	default:
		s = fmt.Sprintf("no room on %d candidate hosts: what they hold is pinned, required, younger than min residency %v, or more recently used", full, v.pool.cfg.MinResidency)
	}
	if d.whyCache == nil {
		d.whyCache = map[whyKey]string{}
	}
	d.whyCache[ck] = s
	return s
}

type whyKey struct {
	pool                 *poolState
	backoff, full, ranks int
}

func reasonOr(r Requirement) string {
	if r.Reason != "" {
		return r.Reason
	}
	if r.Pinned {
		return "pin"
	}
	return "routing"
}

func joinReason(a, b string) string {
	if a == "" {
		return b
	}
	if a == b {
		return a
	}
	return a + ", " + b
}
