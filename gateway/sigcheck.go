package gateway

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tfgate/tfgate/preprocess"
	tfpb "github.com/tfgate/tfgate/proto/tensorflow"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

// errPending is a version's state while its signature check has not finished.
var errPending = errors.New("signature check pending")

// sigChecker checks each version's spec once against its signature, in the
// background, and remembers the outcome per version and spec content hash: a
// replaced spec is checked again. Each version's signature is fetched
// (GetModelMetadata), but the comparison is cached by (spec hash, signature
// hash): per-customer models with one spec and one graph compile and compare it
// once, and a version whose pair was seen needs no compiled pipeline at all.
type sigChecker struct {
	backends Backends
	specs    Specs
	log      *slog.Logger
	stats    *counters // sigFailures, sigCompared, sigReused
	done     func()    // called when a check finishes (the builder rebuilds)
	sem      chan struct{}

	mu      sync.Mutex
	results map[vkey]*sigResult
	pairs   map[sigPair]*pairCheck // comparisons, done or running
	ctx     context.Context        // set by start; nil until Run
	wg      sync.WaitGroup
}

type sigResult struct {
	hash    preprocess.SpecHash
	pools   []string
	pair    sigPair // set when done: whose comparison it used
	done    bool
	running bool
	err     error // set when done and the check failed
}

// pairCheck is one comparison: err (nil for a match) is set before done closes;
// abandoned says the spec could not be loaded, so there is no outcome.
type pairCheck struct {
	done      chan struct{}
	err       error
	abandoned bool
}

// sigPair is what a comparison depends on: the spec's content hash and a hash of
// the version's serving_default SignatureDef (deterministic encoding).
type sigPair struct {
	spec preprocess.SpecHash
	sig  [sha256.Size]byte
}

const (
	sigCallTimeout = 5 * time.Second
	sigBackoffMin  = 200 * time.Millisecond
	sigBackoffMax  = 10 * time.Second
)

func newSigChecker(backends Backends, specs Specs, log *slog.Logger, stats *counters, done func(), concurrency int) *sigChecker {
	return &sigChecker{backends: backends, specs: specs, log: log, stats: stats, done: done,
		sem: make(chan struct{}, concurrency), results: map[vkey]*sigResult{}, pairs: map[sigPair]*pairCheck{}}
}

// status is nil when the version's spec with content hash h passed its check;
// otherwise why not (errPending while the check runs, which it starts if it can).
func (c *sigChecker) status(k vkey, h preprocess.SpecHash, pools []string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.results[k]
	if r == nil || r.hash != h {
		r = &sigResult{hash: h, pools: pools}
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

// retain drops the results of the versions keep rejects, and the comparisons no
// remaining result uses, and returns how many results it dropped. Without it the
// checker would keep a result per (model, version) ever seen, and with
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
	if n > 0 {
		used := make(map[sigPair]bool, len(c.pairs))
		for _, r := range c.results {
			if r.done {
				used[r.pair] = true
			}
		}
		for p, pc := range c.pairs {
			if !used[p] && closed(pc.done) {
				delete(c.pairs, p)
			}
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
		pair, err, final := c.checkOnce(ctx, k, r.hash, r.pools)
		if final {
			c.mu.Lock()
			r.done, r.running, r.err, r.pair = true, false, err, pair
			c.mu.Unlock()
			if err != nil {
				c.stats.sigFailures.Add(1)
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
// is not: it is retried), and the comparison it used.
func (c *sigChecker) checkOnce(ctx context.Context, k vkey, h preprocess.SpecHash, pools []string) (sigPair, error, bool) {
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return sigPair{}, ctx.Err(), false
	}
	defer func() { <-c.sem }()
	cctx, cancel := context.WithTimeout(ctx, sigCallTimeout)
	defer cancel()
	sig, err, final := c.signature(cctx, k, pools)
	if err != nil {
		return sigPair{}, err, final
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(sig)
	if err != nil {
		return sigPair{}, fmt.Errorf("encode the signature: %w", err), true
	}
	pair := sigPair{spec: h, sig: sha256.Sum256(b)}
	c.mu.Lock()
	pc, seen := c.pairs[pair]
	if !seen {
		pc = &pairCheck{done: make(chan struct{})}
		c.pairs[pair] = pc
	}
	c.mu.Unlock()
	if seen { // compared before, or being compared now for an identical version
		select {
		case <-pc.done:
		case <-ctx.Done():
			return sigPair{}, ctx.Err(), false
		}
		if pc.abandoned {
			return sigPair{}, errors.New("the identical spec's check could not load it"), false
		}
		c.stats.sigReused.Add(1)
		return pair, pc.err, true
	}
	p, err := c.specs.Pipeline(k.model, k.version, h)
	if err != nil {
		c.mu.Lock()
		delete(c.pairs, pair)
		c.mu.Unlock()
		pc.abandoned = true
		close(pc.done)
		// A spec replaced or removed since is checked again under its new
		// hash, if it comes back; another failure to read it is retried.
		gone := errors.Is(err, preprocess.ErrSpecChanged) || errors.Is(err, preprocess.ErrVersionNotFound)
		return sigPair{}, fmt.Errorf("load the spec: %w", err), gone
	}
	pc.err = p.CheckSignature(sig)
	c.stats.sigCompared.Add(1)
	close(pc.done)
	return pair, pc.err, true
}

// signature fetches the version's serving_default signature; the bool says
// whether an error is final.
func (c *sigChecker) signature(cctx context.Context, k vkey, pools []string) (*tfpb.SignatureDef, error, bool) {
	resp, _, err := c.backends.GetModelMetadata(cctx, pools, &servingpb.GetModelMetadataRequest{
		ModelSpec:     &servingpb.ModelSpec{Name: k.model, VersionChoice: &servingpb.ModelSpec_Version{Version: wrapperspb.Int64(k.version)}},
		MetadataField: []string{"signature_def"},
	})
	if err != nil {
		return nil, fmt.Errorf("GetModelMetadata: %w", err), false
	}
	if got := resp.GetModelSpec().GetVersion(); got != nil && got.GetValue() != k.version {
		return nil, fmt.Errorf("%w: GetModelMetadata answered for version %d", ErrVersionMismatch, got.GetValue()), false
	}
	anyv, ok := resp.GetMetadata()["signature_def"]
	if !ok {
		return nil, errors.New("GetModelMetadata returned no signature_def"), true
	}
	var sigs servingpb.SignatureDefMap
	if err := proto.Unmarshal(anyv.GetValue(), &sigs); err != nil {
		return nil, fmt.Errorf("GetModelMetadata signature_def does not decode: %w", err), true
	}
	sig, ok := sigs.GetSignatureDef()[defaultSignature]
	if !ok {
		names := make([]string, 0, len(sigs.GetSignatureDef()))
		for n := range sigs.GetSignatureDef() {
			names = append(names, n)
		}
		slices.Sort(names)
		return nil, fmt.Errorf("the model has no %q signature (it has: %s)", defaultSignature, strings.Join(names, ", ")), true
	}
	return sig, nil, true
}
