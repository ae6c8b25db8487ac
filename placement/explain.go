package placement

import (
	"fmt"
	"sort"
	"strings"
)

// Candidate is one host in a version's rendezvous ranking, as the decision left it.
type Candidate struct {
	Host string
	// Rank is 0 for the best candidate.
	Rank int
	// CapacityBytes and FreeBytes are the host's capacity and what the decision left free.
	CapacityBytes int64
	FreeBytes     int64
	// Chosen: the version is assigned to this host.
	Chosen   bool
	Draining bool
	// Note says why a candidate was passed over ("full", "load-failure backoff until ...").
	Note string
}

// Explanation is why a version is where it is.
type Explanation struct {
	VersionState
	Candidates []Candidate
}

// String is a one-paragraph explanation for logs and CLI output.
func (e Explanation) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s, pool %s, %d bytes (%s), want %d copies", e.Key, e.State, e.Pool, e.Bytes,
		map[bool]string{true: "reported", false: "estimated"}[e.Reported], e.Want)
	fmt.Fprintf(&b, ", demand %.3g/s", e.Rate)
	if !e.LastUsed.IsZero() {
		fmt.Fprintf(&b, " last used %s", e.LastUsed.UTC().Format("2006-01-02T15:04:05Z"))
	}
	if e.Pinned {
		b.WriteString(", pinned")
	}
	if e.Required != "" {
		fmt.Fprintf(&b, ", required (%s)", e.Required)
	}
	if e.Why != "" {
		fmt.Fprintf(&b, "; %s", e.Why)
	}
	for _, c := range e.Candidates {
		mark := " "
		if c.Chosen {
			mark = "*"
		}
		fmt.Fprintf(&b, "\n  %s #%d %s free %d/%d", mark, c.Rank, c.Host, c.FreeBytes, c.CapacityBytes)
		if c.Draining {
			b.WriteString(" draining")
		}
		if c.Note != "" {
			fmt.Fprintf(&b, " (%s)", c.Note)
		}
	}
	return b.String()
}

// Explain says where a version is placed and why: its inputs (size, demand, pins),
// its state, and every candidate host in rank order with the room the decision
// left there. ok is false for a version the decision did not consider (no demand,
// not required, not previously placed).
func (d *Decision) Explain(k Key) (Explanation, bool) {
	i := sort.Search(len(d.Versions), func(i int) bool { return !d.Versions[i].Key.Less(k) })
	if i == len(d.Versions) || d.Versions[i].Key != k {
		return Explanation{}, false
	}
	e := Explanation{VersionState: d.Versions[i]}
	p := d.pools[e.Pool]
	if p == nil {
		return e, true
	}
	chosen := map[string]bool{}
	for _, h := range e.Hosts {
		chosen[h] = true
	}
	draining := map[string]bool{}
	for _, h := range e.Draining {
		draining[h] = true
	}
	for r, re := range p.ring.rank(keyHash(k), nil) {
		h := d.hosts[re.host]
		c := Candidate{Host: h.id, Rank: r, CapacityBytes: h.cap, FreeBytes: h.cap - h.used,
			Chosen: chosen[h.id], Draining: draining[h.id]}
		if f, ok := d.fail[hostKey{re.host, k}]; ok {
			c.Note = fmt.Sprintf("load-failure backoff until %s: %s", f.Until.UTC().Format("15:04:05Z"), f.Reason)
		} else if h.frozen && !c.Chosen {
			c.Note = "frozen: its sidecar stopped reporting"
		} else if !c.Chosen && c.FreeBytes < e.Bytes {
			c.Note = "full"
		}
		e.Candidates = append(e.Candidates, c)
	}
	return e, true
}
