package hosts

import (
	"context"
	"errors"
	"maps"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

const (
	// wantsPerModel bounds Want's set to this many keys per served model (in total,
	// not per model).
	wantsPerModel = 4
	// minPriorityBatch is the least number of priority polls per host in one round.
	// More pending than that (start-up, a host joining) is spread over back-to-back
	// rounds, each publishing what it learnt, so models become routable as they are
	// polled rather than all at the end; the batch doubles with each such round, so
	// 50,000 models take 5 rounds (and 5 snapshot rebuilds), not 25.
	minPriorityBatch = 2048
	// wantPoll is how soon a priority-only round follows one that left wanted
	// versions (Want) unanswered. A version wanted for a cold start becomes
	// AVAILABLE about its load time after it is placed, usually well inside one
	// interval; waiting for the next interval tick (whose round also carries the
	// resync) added up to that interval, and more on a busy host, to every cold
	// start. The cost is one GetModelStatus per wanted model and host per wantPoll.
	wantPoll = 100 * time.Millisecond
)

// resyncQuota is the resync polls per host per interval tick: the budget
// max_polls_per_second spread over the ticks, at least 1.
func resyncQuota(rc ReadinessConfig) int {
	return max(1, int(math.Ceil(float64(rc.MaxPollsPerSecond)*rc.Interval.Seconds())))
}

// Want asks for version of model to be polled on every host, each poll round,
// until some host reports it AVAILABLE: the fast path for a version the caller
// knows should appear (it has its preprocessing spec but no host). It is cheap and
// never blocks on polling (it takes only a small lock of its own), may be called
// repeatedly for the same key, and kicks a poll round when the key is new. The
// set holds at most 4 x (models given to SetModels) keys; keys beyond that are
// ignored (the budgeted resync still finds them), and keys whose model is not in
// SetModels are dropped at the next round. A key is dropped once some host
// reports it AVAILABLE (it is routable then; other hosts get it by resync).
// Wanting a version that is already routable does nothing.
func (m *Manager) Want(model string, version int64) {
	k := versionKey{model, version}
	if len(m.snap.Load().ready[k]) > 0 {
		return // routable already
	}
	m.wantMu.Lock()
	_, had := m.wants[k]
	added := !had && len(m.wants) < wantsPerModel*int(m.nModels.Load())
	if added {
		m.wants[k] = struct{}{}
	}
	m.wantMu.Unlock()
	if added {
		m.kickPoll()
	}
}

func (m *Manager) pollLoop(ctx context.Context) error {
	t := time.NewTicker(m.cfg.Readiness.Interval)
	defer t.Stop()
	resync := true
	for {
		m.mu.Lock()
		allDelivered := len(m.delivered) == len(m.disc)
		m.mu.Unlock()
		complete := m.pollRound(ctx, resync)
		if ctx.Err() != nil {
			return nil
		}
		if allDelivered && complete {
			m.mu.Lock()
			if !m.readyDone {
				m.readyDone = true
				close(m.ready)
			}
			m.mu.Unlock()
		}
		if ne := m.snap.Load().nextExpiry; ne != 0 && m.now().UnixNano() >= ne {
			m.rebuild() // an ejection ended
		}
		var again *time.Timer
		var againC <-chan time.Time
		m.wantMu.Lock()
		if len(m.wants) > 0 {
			again = time.NewTimer(min(wantPoll, m.cfg.Readiness.Interval))
			againC = again.C
		}
		m.wantMu.Unlock()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			resync = true
		case <-m.pollNow:
			resync = false
		case <-againC:
			resync = false // wanted versions only (and what is pending)
		}
		if again != nil {
			again.Stop()
		}
	}
}

type pollJob struct {
	h        *host
	model    string
	priority bool // from the priority set, not the budgeted resync
}

type pollResult struct {
	pollJob
	vs      []int64
	err     error
	skipped bool // not sent: the host failed at the transport level this round
}

// hostDown reports a poll error that is about the host rather than the model.
func hostDown(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return errors.Is(err, ErrClosed)
}

// pollRound runs one readiness round and applies its results. Per host it polls
// the priority set (models with a NOT_FOUND mark or a wanted version the host does
// not have, then models the host has not answered for), at least minPriorityBatch
// of them, and, when resync is set (interval ticks), the next quota models of the
// round-robin resync. A host whose poll fails at the transport level is not polled
// again this round. It returns false when priority work was left for the next
// round (which it kicks).
func (m *Manager) pollRound(ctx context.Context, resync bool) (complete bool) {
	m.wantMu.Lock()
	wants := slices.Collect(maps.Keys(m.wants))
	m.wantMu.Unlock()

	m.mu.Lock()
	models := m.models
	hs := slices.SortedFunc(maps.Values(m.hosts), func(a, b *host) int { return strings.Compare(a.addr, b.addr) })
	var jobs []pollJob
	truncated := map[*host]bool{}
	batch := max(minPriorityBatch, m.quota, m.prioBatch)
	for _, h := range hs {
		urgent := map[string]bool{}
		for _, model := range h.takeNotFound() {
			if served(models, model) {
				urgent[model] = true
			}
		}
		for _, k := range wants {
			if served(models, k.model) && !slices.Contains(h.avail[k.model], k.version) {
				urgent[k.model] = true
			}
		}
		prio := slices.Sorted(maps.Keys(urgent))
		var rest []string
		room := max(0, batch-len(prio))
		for model := range h.pending { // any order: all are polled within a few rounds
			if urgent[model] {
				continue
			}
			if len(rest) == room {
				truncated[h] = true
				break
			}
			rest = append(rest, model)
		}
		polled := make(map[string]bool, len(prio)+len(rest))
		for _, model := range append(prio, rest...) {
			polled[model] = true
			jobs = append(jobs, pollJob{h, model, true})
		}
		if resync && len(models) > 0 {
			q, i := m.quota, 0
			for ; i < len(models) && q > 0; i++ {
				model := models[(h.cursor+i)%len(models)]
				if polled[model] {
					continue // polled above; costs no budget
				}
				jobs = append(jobs, pollJob{h, model, false})
				q--
			}
			h.cursor = (h.cursor + i) % len(models)
		}
	}
	m.mu.Unlock()
	if len(jobs) == 0 {
		m.dropWants()
		return true
	}

	down := make(map[*host]*atomic.Bool, len(hs))
	for _, h := range hs {
		down[h] = &atomic.Bool{}
	}
	results := make([]pollResult, len(jobs))
	g := errgroup.Group{}
	g.SetLimit(m.cfg.Readiness.Concurrency)
	for i, j := range jobs {
		if ctx.Err() != nil {
			break
		}
		results[i] = pollResult{pollJob: j, skipped: true}
		g.Go(func() error {
			if down[j.h].Load() {
				return nil
			}
			vs, err := m.pollModel(ctx, j.h, j.model)
			results[i].vs, results[i].err, results[i].skipped = vs, err, false
			if err != nil && hostDown(err) {
				down[j.h].Store(true)
			}
			return nil
		})
	}
	_ = g.Wait()
	if ctx.Err() != nil {
		return false
	}
	complete = true
	for h := range truncated {
		if !down[h].Load() { // a host that is down waits for the next tick
			complete = false
		}
	}
	if complete {
		m.prioBatch = 0
	} else {
		m.prioBatch = 2 * batch
	}
	if m.apply(ctx, results) {
		m.rebuild()
	}
	m.dropWants()
	if !complete {
		m.kickPoll()
	}
	return complete
}

// apply records a round's results; true when the readiness view changed.
func (m *Manager) apply(ctx context.Context, results []pollResult) (changed bool) {
	type tally struct{ ok, down int }
	tallies := map[*host]*tally{}
	thr := m.cfg.Readiness.FailureThreshold
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range results {
		if r.h == nil || r.skipped {
			continue // not sent
		}
		m.met.polls.Add(ctx, 1, metric.WithAttributeSet(m.met.pollKind[r.priority]))
		if m.hosts[r.h.addr] != r.h || !served(m.models, r.model) {
			continue // host removed or model dropped meanwhile
		}
		t := tallies[r.h]
		if t == nil {
			t = &tally{}
			tallies[r.h] = t
		}
		old, had := r.h.avail[r.model]
		if r.err == nil {
			t.ok++
			delete(r.h.pollFailures, r.model)
			delete(r.h.pending, r.model)
			if !had || !slices.Equal(old, r.vs) {
				r.h.avail[r.model] = r.vs
				changed = true
			}
			continue
		}
		m.met.pollErrors.Add(ctx, 1)
		if hostDown(r.err) {
			t.down++
		}
		r.h.pollFailures[r.model]++
		if r.h.pollFailures[r.model] >= thr && had {
			delete(r.h.avail, r.model)
			r.h.pending[r.model] = struct{}{} // poll every round until it answers
			changed = true
			m.log.Warn("readiness poll failing; host's versions dropped",
				"addr", r.h.addr, "model", r.model, "err", r.err)
		}
	}
	for h, t := range tallies {
		if t.ok > 0 || t.down == 0 {
			h.deadRounds = 0
			continue
		}
		h.deadRounds++
		if h.deadRounds >= thr && len(h.avail) > 0 {
			// The host answers no poll at all: drop everything it reported at
			// once rather than model by model at the resync rate.
			m.log.Warn("host failing every readiness poll; all its versions dropped",
				"addr", h.addr, "models", len(h.avail), "rounds", h.deadRounds)
			for model := range h.avail {
				h.pending[model] = struct{}{}
			}
			clear(h.avail)
			clear(h.pollFailures)
			changed = true
		}
	}
	return changed
}

// dropWants forgets wanted versions that some host has AVAILABLE or whose model
// is no longer served.
func (m *Manager) dropWants() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.wantMu.Lock()
	defer m.wantMu.Unlock()
	for k := range m.wants {
		if !served(m.models, k.model) {
			delete(m.wants, k)
			continue
		}
		for _, h := range m.hosts {
			if slices.Contains(h.avail[k.model], k.version) {
				delete(m.wants, k)
				break
			}
		}
	}
}

// served reports whether model is in the sorted models.
func served(models []string, model string) bool {
	_, ok := slices.BinarySearch(models, model)
	return ok
}

// pollModel returns the AVAILABLE versions of model on h (none when the host does
// not know the model).
func (m *Manager) pollModel(ctx context.Context, h *host, model string) ([]int64, error) {
	if h.isClosed() {
		return nil, ErrClosed
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.Readiness.Timeout)
	defer cancel()
	resp, err := h.ms.GetModelStatus(ctx, &servingpb.GetModelStatusRequest{
		ModelSpec: &servingpb.ModelSpec{Name: model},
	})
	if status.Code(err) == codes.NotFound {
		return []int64{}, nil
	}
	if err != nil {
		return nil, err
	}
	vs := []int64{}
	for _, s := range resp.GetModelVersionStatus() {
		if s.GetState() == servingpb.ModelVersionStatus_AVAILABLE {
			vs = append(vs, s.GetVersion())
		}
	}
	slices.Sort(vs)
	return slices.Compact(vs), nil
}
