package batching

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

// DefaultSignature is the signature an empty model_spec.signature_name means.
const DefaultSignature = "serving_default"

// PoolInvoke sends one Predict to a host of pools (host picking, failover and
// retries included), as Invoke does for one Batcher.
type PoolInvoke func(ctx context.Context, pools []string, req *servingpb.PredictRequest) (*servingpb.PredictResponse, error)

// Group keeps one Batcher per (model, version, signature), created on first use with
// the model's current Config and host pools. When a model's Config or pools change
// (a routing config reload), the next request creates a new Batcher and the old one
// is closed in the background after flushing what it holds, so every batch goes to
// the pools of all its members. Group is safe for concurrent use.
type Group struct {
	invoke PoolInvoke
	opts   Options

	mu       sync.Mutex
	closed   bool
	batchers map[Key]*Batcher
	retiring sync.WaitGroup
	closeCtx context.Context // ends when Close gives up waiting
	giveUp   context.CancelFunc
}

// NewGroup returns an empty Group whose batchers send through invoke, each to
// the pools it was created for. opts.Key is ignored: each batcher gets its own.
func NewGroup(invoke PoolInvoke, opts Options) *Group {
	g := &Group{invoke: invoke, opts: opts, batchers: make(map[Key]*Batcher)}
	g.closeCtx, g.giveUp = context.WithCancel(context.Background())
	return g
}

// KeyOf returns the batcher key for req: its model name, explicit version and
// signature ("" means serving_default). A request without an explicit version is an
// error: the gateway always resolves labels and arms to a version first.
func KeyOf(req *servingpb.PredictRequest) (Key, error) {
	spec := req.GetModelSpec()
	if spec.GetVersion() == nil {
		return Key{}, fmt.Errorf("%w: batching model %q needs an explicit model_spec.version; resolve the label or arm to a version first",
			ErrInvalidRequest, spec.GetName())
	}
	sig := spec.GetSignatureName()
	if sig == "" {
		sig = DefaultSignature
	}
	return Key{Model: spec.GetName(), Version: spec.GetVersion().GetValue(), Signature: sig}, nil
}

// Do sends req to a host of pools, through the batcher of its (model, version,
// signature) when cfg.Enabled, and straight to the backend otherwise. cfg and
// pools are the model's current batching config and host pools.
func (g *Group) Do(ctx context.Context, cfg Config, pools []string, req *servingpb.PredictRequest) (*servingpb.PredictResponse, error) {
	if !cfg.Enabled {
		return g.invoke(ctx, pools, req)
	}
	k, err := KeyOf(req)
	if err != nil {
		return nil, err
	}
	b, err := g.batcher(k, cfg, pools)
	if err != nil {
		return nil, err
	}
	return b.Do(ctx, req)
}

func (g *Group) batcher(k Key, cfg Config, pools []string) (*Batcher, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, fmt.Errorf("%s: %w; the gateway is shutting down, retry on another instance", k, ErrClosed)
	}
	b := g.batchers[k]
	if b != nil && b.Config().Equal(cfg) && slices.Equal(b.pools, pools) {
		return b, nil
	}
	if b != nil {
		g.retire(b)
	}
	opts := g.opts
	opts.Key = k
	pools = slices.Clone(pools)
	b = New(cfg, func(ctx context.Context, req *servingpb.PredictRequest) (*servingpb.PredictResponse, error) {
		return g.invoke(ctx, pools, req)
	}, opts)
	b.pools = pools
	g.batchers[k] = b
	return b, nil
}

// retire closes b in the background, flushing its queue. Called with g.mu held.
func (g *Group) retire(b *Batcher) {
	g.retiring.Add(1)
	go func() {
		defer g.retiring.Done()
		_ = b.Close(g.closeCtx)
	}()
}

// Retain closes and drops the batchers of the model versions keep rejects (their
// queued requests are still sent) and returns how many it dropped. The gateway
// calls it after each routing rebuild so that batchers of versions that are gone
// (rebuilt daily, 50,000 models) do not pile up.
func (g *Group) Retain(keep func(model string, version int64) bool) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for k, b := range g.batchers {
		if !keep(k.Model, k.Version) {
			delete(g.batchers, k)
			g.retire(b)
			n++
		}
	}
	return n
}

// Close closes every batcher (sending what they hold) and waits for them; if ctx ends
// first their backend calls are cancelled and Close returns ctx's error after they
// return. Do after Close fails with ErrClosed (UNAVAILABLE at the gateway).
func (g *Group) Close(ctx context.Context) error {
	g.mu.Lock()
	g.closed = true
	all := make([]*Batcher, 0, len(g.batchers))
	for _, b := range g.batchers {
		all = append(all, b)
	}
	g.batchers = map[Key]*Batcher{}
	g.mu.Unlock()
	errs := make([]error, len(all))
	var wg sync.WaitGroup
	for i, b := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = b.Close(ctx)
		}()
	}
	stop := context.AfterFunc(ctx, g.giveUp)
	defer stop()
	wg.Wait()
	g.retiring.Wait()
	g.giveUp()
	if err := ctx.Err(); err != nil {
		return err
	}
	return errors.Join(errs...)
}

// Stats is a snapshot of one batcher, for introspection.
type Stats struct {
	Key Key
	// Queued is the number of requests waiting; QueuedBatches the batches holding
	// them (open or full); InFlight the backend calls running.
	Queued, QueuedBatches, InFlight int
	// ServiceTime and LoneServiceTime are the moving averages of batched and lone
	// backend calls (0 until measured), the expected times deadline checks use.
	ServiceTime, LoneServiceTime time.Duration
}

// Stats returns a snapshot of b.
func (b *Batcher) Stats() Stats {
	s := b.stats()
	return Stats{Key: b.key, Queued: s.queuedTasks, QueuedBatches: s.queuedBatches, InFlight: s.inFlight,
		ServiceTime: s.ewma, LoneServiceTime: s.ewmaAlone}
}

// Stats returns a snapshot of every batcher in g, in no particular order.
func (g *Group) Stats() []Stats {
	g.mu.Lock()
	all := make([]*Batcher, 0, len(g.batchers))
	for _, b := range g.batchers {
		all = append(all, b)
	}
	g.mu.Unlock()
	out := make([]Stats, len(all))
	for i, b := range all {
		out[i] = b.Stats()
	}
	return out
}
