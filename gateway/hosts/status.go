package hosts

import (
	"slices"
	"time"
)

// Health is a host's state as an operator sees it.
type Health string

// The values of [HostStatus.Health], worst first.
const (
	// HealthEjected: taken out of picking after transport failures, until
	// HostStatus.EjectedUntil (tried only when every host with a version is).
	HealthEjected Health = "ejected"
	// HealthUnreachable: every readiness poll of the last round failed at the
	// transport level.
	HealthUnreachable Health = "unreachable"
	// HealthWaiting: discovered, but it has not answered a readiness poll yet.
	HealthWaiting Health = "waiting"
	// HealthUp: answering, not ejected.
	HealthUp Health = "up"
)

// HostStatus is one host of one pool, for introspection (the admin status page).
type HostStatus struct {
	Addr   string
	Health Health
	// Conn is the gRPC connection's state (IDLE, CONNECTING, READY,
	// TRANSIENT_FAILURE, SHUTDOWN).
	Conn string
	// EjectedUntil is when the ejection ends; zero when not ejected.
	EjectedUntil time.Time
	// Ejections counts ejections since the host's last success (the backoff
	// exponent); Failures its consecutive transport failures.
	Ejections, Failures int
	// FailedRounds counts consecutive readiness rounds in which every poll of
	// the host failed at the transport level.
	FailedRounds int
	// Models is how many served models the host reports versions AVAILABLE of,
	// Versions how many (model, version) pairs; Pending how many models it has
	// not answered about yet.
	Models, Versions, Pending int
	// InFlight is the calls outstanding on the host now.
	InFlight int64
}

// PoolStatus is one configured pool and its discovered hosts.
type PoolStatus struct {
	Name string
	// Discovered: the pool's discovery has reported at least once.
	Discovered bool
	// Hosts, sorted by address.
	Hosts []HostStatus
}

// Pools describes every configured pool and its hosts now, sorted by name. It
// takes the manager's lock briefly (one pass over the hosts); it is meant for
// introspection, not the request path.
func (m *Manager) Pools() []PoolStatus {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]PoolStatus, 0, len(m.cfg.Pools))
	for _, name := range m.poolNames() {
		ps := PoolStatus{Name: name, Discovered: m.delivered[name]}
		addrs := slices.Sorted(slices.Values(m.members[name]))
		for _, a := range slices.Compact(addrs) {
			if h := m.hosts[a]; h != nil {
				ps.Hosts = append(ps.Hosts, h.status(now, len(m.models)))
			}
		}
		out = append(out, ps)
	}
	return out
}

// status describes h. Called with the manager's mutex held (it reads avail,
// pending and deadRounds); takes h.mu.
func (h *host) status(now time.Time, models int) HostStatus {
	s := HostStatus{
		Addr:         h.addr,
		Conn:         h.conn.GetState().String(),
		FailedRounds: h.deadRounds,
		Pending:      len(h.pending),
		InFlight:     h.outstanding.Load(),
	}
	for _, vs := range h.avail {
		if len(vs) > 0 {
			s.Models++
			s.Versions += len(vs)
		}
	}
	h.mu.Lock()
	s.Ejections, s.Failures = h.ejections, h.failures
	h.mu.Unlock()
	until := h.ejectedUntil.Load()
	switch {
	case until > now.UnixNano():
		s.Health, s.EjectedUntil = HealthEjected, time.Unix(0, until)
	case h.deadRounds > 0:
		s.Health = HealthUnreachable
	case models > 0 && s.Pending == models && len(h.avail) == 0:
		s.Health = HealthWaiting
	default:
		s.Health = HealthUp
	}
	return s
}
