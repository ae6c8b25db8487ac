package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tfgate/tfgate/preprocess"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

// errPending is a version's state while its signature check has not finished.
var errPending = errors.New("signature check pending")

// sigChecker checks each loaded pipeline once against its version's signature
// (GetModelMetadata), in the background, and remembers the outcome per pipeline:
// a replaced spec is checked again.
type sigChecker struct {
	backends Backends
	log      *slog.Logger
	failures *atomic.Uint64 // specs that failed their check
	done     func()         // called when a check finishes (the builder rebuilds)
	sem      chan struct{}

	mu      sync.Mutex
	results map[vkey]*sigResult
	ctx     context.Context // set by start; nil until Run
	wg      sync.WaitGroup
}

type sigResult struct {
	p       *preprocess.Pipeline
	pools   []string
	done    bool
	running bool
	err     error // set when done and the check failed
}

const (
	sigCallTimeout = 5 * time.Second
	sigBackoffMin  = 200 * time.Millisecond
	sigBackoffMax  = 10 * time.Second
)

func newSigChecker(backends Backends, log *slog.Logger, failures *atomic.Uint64, done func(), concurrency int) *sigChecker {
	return &sigChecker{backends: backends, log: log, failures: failures, done: done,
		sem: make(chan struct{}, concurrency), results: map[vkey]*sigResult{}}
}

// status is nil when p passed its check; otherwise why not (errPending while the
// check runs, which it starts if it can).
func (c *sigChecker) status(k vkey, p *preprocess.Pipeline, pools []string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.results[k]
	if r == nil || r.p != p {
		r = &sigResult{p: p, pools: pools}
		c.results[k] = r
	}
	if r.done {
		return r.err
	}
	if !r.running && c.ctx != nil {
		r.running = true
		c.wg.Add(1)
		go c.check(c.ctx, k, r)
	}
	return errPending
}

// lastErr is the failed check's error for the version's current result, if any.
func (c *sigChecker) lastErr(k vkey) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.results[k]; r != nil && r.done {
		return r.err
	}
	return nil
}

// retain drops the results of the versions keep rejects and returns how many it
// dropped. Each result holds a compiled pipeline (vocabulary included), so without
// this the checker would keep one per (model, version) ever seen, and with
// per-customer models rebuilt daily that grows without bound. A check still
// running for a dropped version finishes on its orphaned result, which nothing
// reads; if the version comes back it is checked again.
func (c *sigChecker) retain(keep func(vkey) bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for k := range c.results {
		if !keep(k) {
			delete(c.results, k)
			n++
		}
	}
	return n
}

// size is the number of results held (for tests).
func (c *sigChecker) size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.results)
}

// start lets checks run under ctx; wait waits for them after ctx ends.
func (c *sigChecker) start(ctx context.Context) {
	c.mu.Lock()
	c.ctx = ctx
	c.mu.Unlock()
}

func (c *sigChecker) wait() { c.wg.Wait() }

func (c *sigChecker) check(ctx context.Context, k vkey, r *sigResult) {
	defer c.wg.Done()
	backoff := sigBackoffMin
	for {
		err, final := c.checkOnce(ctx, k, r.p, r.pools)
		if final {
			c.mu.Lock()
			r.done, r.running, r.err = true, false, err
			c.mu.Unlock()
			if err != nil {
				c.failures.Add(1)
				c.log.Error("gateway: preprocessing spec does not match the model signature; the version is not routable for typed requests", "model", k.model, "version", k.version, "err", err)
			} else {
				c.log.Info("gateway: preprocessing spec matches the model signature", "model", k.model, "version", k.version)
			}
			c.done()
			return
		}
		c.log.Warn("gateway: signature check failed; retrying", "model", k.model, "version", k.version, "err", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			c.mu.Lock()
			r.running = false
			c.mu.Unlock()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, sigBackoffMax)
	}
}

// checkOnce returns the check's error and whether it is final (a backend failure
// is not: it is retried).
func (c *sigChecker) checkOnce(ctx context.Context, k vkey, p *preprocess.Pipeline, pools []string) (error, bool) {
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err(), false
	}
	defer func() { <-c.sem }()
	cctx, cancel := context.WithTimeout(ctx, sigCallTimeout)
	defer cancel()
	resp, _, err := c.backends.GetModelMetadata(cctx, pools, &servingpb.GetModelMetadataRequest{
		ModelSpec:     &servingpb.ModelSpec{Name: k.model, VersionChoice: &servingpb.ModelSpec_Version{Version: wrapperspb.Int64(k.version)}},
		MetadataField: []string{"signature_def"},
	})
	if err != nil {
		return fmt.Errorf("GetModelMetadata: %w", err), false
	}
	if got := resp.GetModelSpec().GetVersion(); got != nil && got.GetValue() != k.version {
		return fmt.Errorf("%w: GetModelMetadata answered for version %d", ErrVersionMismatch, got.GetValue()), false
	}
	anyv, ok := resp.GetMetadata()["signature_def"]
	if !ok {
		return errors.New("GetModelMetadata returned no signature_def"), true
	}
	var sigs servingpb.SignatureDefMap
	if err := proto.Unmarshal(anyv.GetValue(), &sigs); err != nil {
		return fmt.Errorf("GetModelMetadata signature_def does not decode: %w", err), true
	}
	sig, ok := sigs.GetSignatureDef()[defaultSignature]
	if !ok {
		names := make([]string, 0, len(sigs.GetSignatureDef()))
		for n := range sigs.GetSignatureDef() {
			names = append(names, n)
		}
		slices.Sort(names)
		return fmt.Errorf("the model has no %q signature (it has: %s)", defaultSignature, strings.Join(names, ", ")), true
	}
	return p.CheckSignature(sig), true
}
