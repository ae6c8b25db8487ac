package main

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// defaultHeadroom is how far the heap may grow above the live heap between
// collections when no memory limit is set. GOGC 400 lets it grow by 4x the live
// heap, which is what the per-request CPU wants while the live heap is small (up
// to 20 MiB: 80 MiB of headroom, as before), but the live heap grows with the
// catalog (140-260 MB with placement at 50,000 models), and 4x of that is memory
// the gateway never needed: RSS 1.2 GB in the fleet bench. Past it, the soft
// memory limit is kept at the live heap + this headroom + the runtime's other
// memory, re-derived after every collection, so the heap stays within a fixed
// distance of what is live and the collector never works near the live heap as
// a fixed limit below a grown heap makes it (--gomemlimit 250MiB in the fleet
// bench: twice the cold-start timeouts). A collection then comes every 80 MiB
// allocated, as at GOGC 400 with a 20 MiB live heap. 96 MiB peaked at 299-304 MB
// RSS in the fleet bench, at the 300 MB target; 80 MiB leaves a margin.
const defaultHeadroom = 80 << 20

// headroomSamples are the runtime metrics headroomLimit reads, in this order.
var headroomSamples = []string{
	"/gc/cycles/total:gc-cycles",
	"/gc/heap/live:bytes",
	"/memory/classes/total:bytes",
	"/memory/classes/heap/released:bytes",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/heap/free:bytes",
}

// headroomLimit is the soft memory limit that leaves headroom bytes of heap
// growth above the live heap: live + headroom + what the memory limit counts
// besides the heap (stacks, GC metadata, other runtime memory), from samples
// read in headroomSamples' order.
func headroomLimit(s []metrics.Sample, headroom int64) int64 {
	u := func(i int) int64 { return int64(s[i].Value.Uint64()) }
	live := u(1)
	other := u(2) - u(3) - u(4) - u(5) - u(6)
	return live + headroom + max(other, 0)
}

// runHeadroom keeps the soft memory limit at headroomLimit after every
// collection (polled every 250 ms) until ctx ends.
func runHeadroom(ctx context.Context, headroom int64) {
	s := make([]metrics.Sample, len(headroomSamples))
	for i, n := range headroomSamples {
		s[i].Name = n
	}
	var cycles uint64
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		metrics.Read(s)
		if c := s[0].Value.Uint64(); c != cycles {
			cycles = c
			debug.SetMemoryLimit(headroomLimit(s, headroom))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
