package modelsync

import (
	"container/list"
	"sync"
)

// rejectedSet remembers objects whose archive was rejected, by (key, ETag), so an
// unchanged hostile object is not downloaded again on every catch-up pass or
// redelivery. A new upload under the same key has a new ETag and is judged afresh. It
// is bounded: past max entries the oldest are forgotten (and would be fetched once
// more).
type rejectedSet struct {
	mu    sync.Mutex
	max   int
	order *list.List // of objectID, oldest first
	items map[objectID]rejection
}

type objectID struct{ key, etag string }

type rejection struct {
	reason string
	elem   *list.Element
}

func newRejectedSet(max int) *rejectedSet {
	return &rejectedSet{max: max, order: list.New(), items: map[objectID]rejection{}}
}

// add remembers that the object (key, etag) was rejected for reason. An empty ETag
// names no particular upload and is not remembered.
func (r *rejectedSet) add(key, etag, reason string) {
	if etag == "" || r.max <= 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	id := objectID{key, etag}
	if old, ok := r.items[id]; ok {
		r.order.Remove(old.elem)
	}
	r.items[id] = rejection{reason: reason, elem: r.order.PushBack(id)}
	for r.order.Len() > r.max {
		oldest := r.order.Remove(r.order.Front()).(objectID)
		delete(r.items, oldest)
	}
}

// get reports why (key, etag) was rejected, if it was.
func (r *rejectedSet) get(key, etag string) (string, bool) {
	if etag == "" {
		return "", false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	it, ok := r.items[objectID{key, etag}]
	return it.reason, ok
}
