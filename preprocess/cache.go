package preprocess

import (
	"errors"
	"sync"
	"sync/atomic"
)

// DefaultCacheBytes is StoreOptions.CacheBytes's default: 64 MiB of compiled
// pipelines, about 30,000 small feature specs or 20 specs with 30,000-token
// WordPiece vocabularies.
const DefaultCacheBytes = 64 << 20

// ErrSpecChanged reports a version whose spec on disk no longer has the content
// hash the Store read (it was replaced in place, or is being replaced): the
// pipeline that was checked is not the one there now. The next scan sees it.
var ErrSpecChanged = errors.New("the version's preprocessing spec changed on disk since it was scanned")

// pipelineCache is a byte-bounded LRU of compiled pipelines keyed by content
// hash. Misses compile once however many callers ask at the same time
// (singleflight). Bytes are the pipelines' estimates plus their vocabularies,
// each counted once however many cached pipelines share it; the entry just
// added is kept even when it alone is over the budget, so the cache holds at most
// budget plus one pipeline.
type pipelineCache struct {
	budget int64
	vocabs *vocabCache

	mu         sync.Mutex
	m          map[SpecHash]*cacheEntry
	head, tail *cacheEntry // most and least recently used
	bytes      int64
	inflight   map[SpecHash]*compileCall

	hits, misses, evictions atomic.Int64
}

type cacheEntry struct {
	p          *Pipeline
	prev, next *cacheEntry
}

type compileCall struct {
	done chan struct{}
	p    *Pipeline
	err  error
}

// CacheStats are the cache's counters and sizes.
type CacheStats struct {
	Hits, Misses, Evictions int64
	Entries                 int
	Bytes, Budget           int64
}

func newPipelineCache(budget int64, vocabs *vocabCache) *pipelineCache {
	return &pipelineCache{budget: budget, vocabs: vocabs, m: map[SpecHash]*cacheEntry{}, inflight: map[SpecHash]*compileCall{}}
}

// get returns the pipeline of hash h, from the cache or from compile (whose
// result must have hash h, or compile's error is returned and nothing cached).
// hit says no compile was needed.
func (c *pipelineCache) get(h SpecHash, compile func() (*Pipeline, error)) (p *Pipeline, hit bool, err error) {
	c.mu.Lock()
	if e := c.m[h]; e != nil {
		c.moveToFront(e)
		c.mu.Unlock()
		c.hits.Add(1)
		return e.p, true, nil
	}
	if call := c.inflight[h]; call != nil {
		c.mu.Unlock()
		<-call.done
		c.hits.Add(1) // compiled once, for someone else
		return call.p, true, call.err
	}
	call := &compileCall{done: make(chan struct{})}
	c.inflight[h] = call
	c.mu.Unlock()
	c.misses.Add(1)

	call.p, call.err = compile()
	if call.err == nil && call.p.hash != h {
		call.p, call.err = nil, ErrSpecChanged
	}
	c.mu.Lock()
	delete(c.inflight, h)
	if call.err == nil {
		c.addLocked(call.p)
	}
	c.mu.Unlock()
	close(call.done)
	return call.p, false, call.err
}

// peek reports whether h is cached, without touching its recency.
func (c *pipelineCache) peek(h SpecHash) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[h] != nil
}

// add caches p (compiled elsewhere) unless its hash is cached already.
func (c *pipelineCache) add(p *Pipeline) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m[p.hash] == nil {
		c.addLocked(p)
	}
}

func (c *pipelineCache) addLocked(p *Pipeline) {
	e := &cacheEntry{p: p}
	c.m[p.hash] = e
	c.pushFront(e)
	c.bytes += c.charge(p, true)
	for c.bytes > c.budget && c.tail != e {
		c.evictLocked(c.tail)
		c.evictions.Add(1)
	}
}

// charge is what p adds to (in) or takes from (!in) the cache's bytes: its own
// estimate, and its vocabulary's when no other cached pipeline shares it.
func (c *pipelineCache) charge(p *Pipeline, in bool) int64 {
	n := p.size
	if p.text != nil && p.text.v != nil {
		v := p.text.v
		if in && c.vocabs.ref(v) || !in && c.vocabs.unref(v) {
			n += v.bytes
		}
	}
	return n
}

func (c *pipelineCache) evictLocked(e *cacheEntry) {
	c.unlink(e)
	delete(c.m, e.p.hash)
	c.bytes -= c.charge(e.p, false)
}

// retain drops the pipelines whose hash live rejects (no version has that spec
// any more) and returns how many it dropped.
func (c *pipelineCache) retain(live func(SpecHash) bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for h, e := range c.m {
		if !live(h) {
			c.evictLocked(e)
			n++
		}
	}
	return n
}

func (c *pipelineCache) setBudget(b int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.budget = b
	for c.bytes > c.budget && c.tail != nil && c.tail != c.head {
		c.evictLocked(c.tail)
		c.evictions.Add(1)
	}
}

func (c *pipelineCache) stats() CacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return CacheStats{Hits: c.hits.Load(), Misses: c.misses.Load(), Evictions: c.evictions.Load(),
		Entries: len(c.m), Bytes: c.bytes, Budget: c.budget}
}

func (c *pipelineCache) pushFront(e *cacheEntry) {
	e.prev, e.next = nil, c.head
	if c.head != nil {
		c.head.prev = e
	}
	c.head = e
	if c.tail == nil {
		c.tail = e
	}
}

func (c *pipelineCache) unlink(e *cacheEntry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		c.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		c.tail = e.prev
	}
	e.prev, e.next = nil, nil
}

func (c *pipelineCache) moveToFront(e *cacheEntry) {
	if c.head != e {
		c.unlink(e)
		c.pushFront(e)
	}
}
