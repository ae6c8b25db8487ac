package hosts

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// budget caps hedges to a percentage of calls: every call earns pct/100 of a token
// (up to maxTokens), a hedge spends a whole one.
type budget struct {
	mu     sync.Mutex
	earn   float64
	tokens float64
}

const maxTokens = 10

func newBudget(pct float64) *budget { return &budget{earn: pct / 100} }

func (b *budget) onCall() {
	b.mu.Lock()
	b.tokens = min(b.tokens+b.earn, maxTokens)
	b.mu.Unlock()
}

func (b *budget) take() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

var (
	hedgeSent = metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", "sent")))
	hedgeWon  = metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", "won")))
)

// hedged runs call on h (already acquired); with hedging on, when it has not
// returned after the hedging delay and the budget allows, a second copy goes to
// another eligible host and the first success wins (the loser is cancelled). It
// returns the host whose result it returns.
func hedged[T any](m *Manager, ctx context.Context, pools []string, k versionKey, h *host, tried *[]*host, call func(context.Context, *host) (T, error)) (T, *host, error) {
	if !m.cfg.Hedging.Enabled {
		res, err := once(m, ctx, h, k.model, call)
		return res, h, err
	}
	m.hedge.onCall()
	type result struct {
		res T
		h   *host
		err error
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := make(chan result, 2)
	run := func(h *host) {
		res, err := once(m, cctx, h, k.model, call)
		ch <- result{res, h, err}
	}
	go run(h)
	timer := time.NewTimer(m.cfg.Hedging.Delay)
	defer timer.Stop()
	inflight, sent := 1, false
	var failed *result
	for {
		select {
		case r := <-ch:
			inflight--
			if r.err == nil {
				if r.h != h {
					m.met.hedges.Add(ctx, 1, hedgeWon)
				}
				return r.res, r.h, nil
			}
			if inflight == 0 {
				if failed != nil && r.h != h {
					r = *failed // report the first call's error
				}
				return r.res, r.h, r.err
			}
			failed = &r
		case <-timer.C:
			if sent || inflight != 1 || !m.deadlineAllows(ctx) || !m.hedge.take() {
				continue
			}
			sent = true
			h2, _ := m.snap.Load().pick(pools, k, *tried, m.now().UnixNano(), m.rnd)
			if h2 == nil || !h2.acquire() {
				continue
			}
			*tried = append(*tried, h2)
			m.met.hedges.Add(ctx, 1, hedgeSent)
			inflight++
			go run(h2)
		}
	}
}
