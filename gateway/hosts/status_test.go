package hosts

import (
	"net"
	"testing"
	"time"

	"github.com/tfgate/tfgate/internal/testwait"
)

// Pools describes every pool's hosts with the health an operator needs: up,
// ejected (until when), and unreachable (every poll failing).
func TestPoolsStatus(t *testing.T) {
	a := startFake(t, map[string][]int64{"m": {1, 2}})
	b := startFake(t, map[string][]int64{"m": {1}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close() // nothing listens: every poll fails at the transport level
	m := startManager(t, testConfig(map[string][]string{"p": {b.addr, a.addr}, "q": {dead}}), Options{}, "m")

	m.mu.Lock()
	hb := m.hosts[b.addr]
	m.mu.Unlock()
	for hb.failed(m.cfg.Ejection, time.Now()) == 0 {
	}
	testwait.Until(t, "the dead host to count a failed round", func() bool {
		ps := m.Pools()
		return len(ps) == 2 && len(ps[1].Hosts) == 1 && ps[1].Hosts[0].Health == HealthUnreachable
	})

	ps := m.Pools()
	if ps[0].Name != "p" || ps[1].Name != "q" || !ps[0].Discovered || !ps[1].Discovered {
		t.Fatalf("Pools = %+v, want p and q, both discovered", ps)
	}
	if len(ps[0].Hosts) != 2 || ps[0].Hosts[0].Addr > ps[0].Hosts[1].Addr {
		t.Fatalf("pool p hosts = %+v, want a and b sorted by address", ps[0].Hosts)
	}
	byAddr := map[string]HostStatus{}
	for _, h := range ps[0].Hosts {
		byAddr[h.Addr] = h
	}
	if h := byAddr[a.addr]; h.Health != HealthUp || h.Models != 1 || h.Versions != 2 || h.Pending != 0 || !h.EjectedUntil.IsZero() {
		t.Errorf("host a = %+v, want up with model m's 2 versions", h)
	}
	if h := byAddr[b.addr]; h.Health != HealthEjected || !h.EjectedUntil.After(time.Now()) || h.Ejections != 1 {
		t.Errorf("host b = %+v, want ejected (once) until a time to come", h)
	}
	if h := ps[1].Hosts[0]; h.Addr != dead || h.FailedRounds == 0 || h.Versions != 0 || h.Pending != 1 {
		t.Errorf("host %s = %+v, want unreachable with failed rounds, nothing AVAILABLE, m pending", dead, h)
	}
}
