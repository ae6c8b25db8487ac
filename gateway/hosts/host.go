package hosts

import (
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

// host is one backend address and its connection. It outlives its removal from
// discovery until its last in-flight call returns; then the connection is closed.
type host struct {
	addr string
	conn *grpc.ClientConn
	pred servingpb.PredictionServiceClient
	ms   servingpb.ModelServiceClient

	outstanding  atomic.Int64 // calls in flight, for power of two choices
	ejectedUntil atomic.Int64 // unix nanos; 0 or past means not ejected

	mu       sync.Mutex
	inflight int
	removed  bool
	closed   bool
	// failures counts consecutive transport failures; ejections counts
	// ejections since the last success (the backoff exponent).
	failures  int
	ejections int
	// notFound: models a call got NOT_FOUND for since the last poll round (the
	// readiness view is behind the host); drained into pending by the poller.
	// Guarded by mu; at most one entry per served model.
	notFound map[string]struct{}

	// readiness, owned by the manager's mutex: model -> AVAILABLE versions.
	avail        map[string][]int64
	pollFailures map[string]int
	// pending: models polled every round until the host answers (never answered,
	// versions dropped after failures, or a call got NOT_FOUND). Subset of models.
	pending map[string]struct{}
	// cursor is the resync round-robin position in the manager's sorted models.
	cursor int
	// deadRounds counts consecutive poll rounds in which every poll of this host
	// failed at the transport level.
	deadRounds int
}

func newHost(addr string, conn *grpc.ClientConn) *host {
	return &host{
		addr:         addr,
		conn:         conn,
		pred:         servingpb.NewPredictionServiceClient(conn),
		ms:           servingpb.NewModelServiceClient(conn),
		avail:        map[string][]int64{},
		pollFailures: map[string]int{},
		pending:      map[string]struct{}{},
		notFound:     map[string]struct{}{},
	}
}

// markNotFound records that a call for model got NOT_FOUND, so the next poll round
// re-polls it; max bounds the set (the number of served models).
func (h *host) markNotFound(model string, max int) {
	h.mu.Lock()
	if len(h.notFound) < max {
		h.notFound[model] = struct{}{}
	}
	h.mu.Unlock()
}

// takeNotFound returns and clears the NOT_FOUND marks.
func (h *host) takeNotFound() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.notFound) == 0 {
		return nil
	}
	out := make([]string, 0, len(h.notFound))
	for model := range h.notFound {
		out = append(out, model)
	}
	clear(h.notFound)
	return out
}

// acquire registers an in-flight call; false when the connection is closed.
func (h *host) acquire() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.inflight++
	h.outstanding.Add(1)
	return true
}

func (h *host) release() {
	h.outstanding.Add(-1)
	h.mu.Lock()
	h.inflight--
	closeNow := h.removed && h.inflight == 0 && !h.closed
	if closeNow {
		h.closed = true
	}
	h.mu.Unlock()
	if closeNow {
		_ = h.conn.Close()
	}
}

// remove marks the host gone from discovery; the connection closes once idle.
func (h *host) remove() {
	h.mu.Lock()
	h.removed = true
	closeNow := h.inflight == 0 && !h.closed
	if closeNow {
		h.closed = true
	}
	h.mu.Unlock()
	if closeNow {
		_ = h.conn.Close()
	}
}

func (h *host) isClosed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closed
}

func (h *host) ejected(now time.Time) bool {
	return h.ejectedUntil.Load() > now.UnixNano()
}

// succeeded resets the failure counters.
func (h *host) succeeded() {
	h.mu.Lock()
	h.failures, h.ejections = 0, 0
	h.mu.Unlock()
}

// failed counts a transport failure and returns the ejection to apply, or 0.
func (h *host) failed(cfg EjectionConfig, now time.Time) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failures++
	threshold := cfg.ConsecutiveFailures
	if h.ejections > 0 {
		threshold = 1 // came back from an ejection and failed again
	}
	if h.failures < threshold || h.ejectedUntil.Load() > now.UnixNano() {
		return 0
	}
	d := cfg.BaseDuration
	for i := 0; i < h.ejections && d < cfg.MaxDuration; i++ {
		d *= 2
	}
	d = min(d, cfg.MaxDuration)
	h.ejections++
	h.failures = 0
	h.ejectedUntil.Store(now.Add(d).UnixNano())
	return d
}
