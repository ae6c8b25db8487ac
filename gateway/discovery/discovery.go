package discovery

import (
	"context"
	"slices"
	"strings"
)

// Endpoint is one backend instance.
type Endpoint struct {
	// Addr is host:port of the instance's gRPC serving port.
	Addr string
	// Tags are the instance's tags (Consul service tags; empty for static pools).
	Tags []string
	// ID identifies the instance in its source (node/service-id in Consul, the
	// address for static pools).
	ID string
	// ServiceID is the Consul service ID ("" for static pools): the host's ID in
	// the placement assignment.
	ServiceID string
}

// Discoverer watches one pool's endpoints.
type Discoverer interface {
	// Run sends the full endpoint set on updates whenever it changes, until ctx is
	// cancelled; then it returns nil.
	Run(ctx context.Context, updates chan<- []Endpoint) error
}

// Static is a fixed endpoint list.
type Static struct {
	eps []Endpoint
}

var _ Discoverer = (*Static)(nil)

// NewStatic returns a Discoverer for a fixed address list (duplicates and blanks
// dropped).
func NewStatic(addrs []string) *Static {
	eps := make([]Endpoint, 0, len(addrs))
	for _, a := range addrs {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		eps = append(eps, Endpoint{Addr: a, ID: a})
	}
	return &Static{eps: normalize(eps)}
}

// Run sends the list once and waits for ctx.
func (s *Static) Run(ctx context.Context, updates chan<- []Endpoint) error {
	select {
	case updates <- slices.Clone(s.eps):
	case <-ctx.Done():
		return nil
	}
	<-ctx.Done()
	return nil
}

// normalize sorts by address and merges instances sharing an address (their tags
// unioned), so that equal sets compare equal.
func normalize(eps []Endpoint) []Endpoint {
	slices.SortFunc(eps, func(a, b Endpoint) int {
		if c := strings.Compare(a.Addr, b.Addr); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	out := eps[:0]
	for _, e := range eps {
		e.Tags = slices.Clone(e.Tags)
		if n := len(out); n > 0 && out[n-1].Addr == e.Addr {
			out[n-1].Tags = append(out[n-1].Tags, e.Tags...)
			continue
		}
		out = append(out, e)
	}
	for i := range out {
		slices.Sort(out[i].Tags)
		out[i].Tags = slices.Compact(out[i].Tags)
	}
	return out
}

// Equal reports whether two normalized endpoint sets are the same.
func Equal(a, b []Endpoint) bool {
	return slices.EqualFunc(a, b, func(x, y Endpoint) bool {
		return x.Addr == y.Addr && x.ID == y.ID && x.ServiceID == y.ServiceID && slices.Equal(x.Tags, y.Tags)
	})
}
