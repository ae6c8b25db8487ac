package main

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tfgate/tfgate/loadtest/fleet"
)

// simLoad is one load a servingsim host logged, in unix milliseconds: the load
// approved (TF Serving's "Approving load for servable version"), started on a
// load thread ("Loading servable version") and finished ("Successfully loaded").
type simLoad struct{ approved, started, loaded float64 }

// threadFree reports whether a load thread was free when the load was approved:
// the host's load queue (--num_load_threads) was not full.
func (l simLoad) threadFree() bool { return l.started-l.approved < 5 }

// parseSimLoads adds the loads logged in r (servingsim's slog text lines) to
// into, by model, each model's loads in order of finishing. A load approved
// but not finished by the end of the log is left out.
func parseSimLoads(r io.Reader, into map[string][]simLoad) error {
	type key struct {
		model, version string
	}
	open := map[key]*simLoad{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		t := sc.Text()
		var stage int
		switch {
		case strings.Contains(t, `msg="approving load for servable version"`):
			stage = 0
		case strings.Contains(t, `msg="loading servable version"`):
			stage = 1
		case strings.Contains(t, `msg="successfully loaded servable version"`):
			stage = 2
		default:
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, field(t, "time"))
		if err != nil {
			return fmt.Errorf("line %d: time: %w", line, err)
		}
		k := key{field(t, "model"), field(t, "version")}
		if k.model == "" || k.version == "" {
			return fmt.Errorf("line %d: a load line without model= and version=: %.120q", line, t)
		}
		ms := float64(at.UnixNano()) / 1e6
		switch stage {
		case 0:
			open[k] = &simLoad{approved: ms}
		case 1:
			if l := open[k]; l != nil {
				l.started = ms
			}
		case 2:
			if l := open[k]; l != nil && l.started > 0 {
				l.loaded = ms
				into[k.model] = append(into[k.model], *l)
			}
			delete(open, k)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	for m := range into {
		slices.SortFunc(into[m], func(a, b simLoad) int {
			if a.loaded < b.loaded {
				return -1
			}
			if a.loaded > b.loaded {
				return 1
			}
			return 0
		})
	}
	return nil
}

// field returns the value of name= in a slog text line ("" if absent).
func field(line, name string) string {
	i := strings.Index(" "+line, " "+name+"=")
	if i < 0 {
		return ""
	}
	v := line[i+len(name)+1:]
	if strings.HasPrefix(v, `"`) {
		if s, err := strconv.QuotedPrefix(v); err == nil {
			u, _ := strconv.Unquote(s)
			return u
		}
		return ""
	}
	if j := strings.IndexByte(v, ' '); j >= 0 {
		v = v[:j]
	}
	return v
}

// coldLoads is the client-side view of cold starts matched to the load that
// served them: a measured request that succeeded after 50 ms or more whose
// model finished a load on some host while it was held.
type coldLoads struct {
	Matched int64 `json:"matched"`
	// ThreadFree: of those, the loads approved while a load thread was free.
	ThreadFree int64 `json:"load_thread_free"`
	// Excess is the request's latency less its version's simulated load time,
	// for the thread-free ones (the target: <= 1 s at p99) and for the
	// others (queued behind the host's load threads).
	ExcessFreeP50   float64 `json:"excess_thread_free_p50_s"`
	ExcessFreeP99   float64 `json:"excess_thread_free_p99_s"`
	ExcessQueuedP50 float64 `json:"excess_queued_p50_s"`
	ExcessQueuedP99 float64 `json:"excess_queued_p99_s"`
	// The thread-free cold starts' steps, in seconds: request to load approved
	// (demand, decision, KV, the sidecar's fetch and reload), the load itself,
	// and loaded to answered (readiness, the call).
	ToApprovedP50 float64 `json:"request_to_approved_p50_s"`
	ToApprovedP99 float64 `json:"request_to_approved_p99_s"`
	LoadP50       float64 `json:"load_p50_s"`
	LoadP99       float64 `json:"load_p99_s"`
	ToServedP50   float64 `json:"loaded_to_served_p50_s"`
	ToServedP99   float64 `json:"loaded_to_served_p99_s"`
}

// matchColdLoads matches the trace's held requests (t0: the trace's start, unix
// ms) to the loads that served them.
func matchColdLoads(trace []fleet.Request, t0 float64, loads map[string][]simLoad, size map[string]int64, loadBPS float64) coldLoads {
	var c coldLoads
	var free, queued, toApp, load, toSrv []float64
	for _, q := range trace {
		if q.Warmup || q.Code != "OK" || q.LatencyMs < 50 {
			continue
		}
		start, end := t0+q.AtMs, t0+q.AtMs+q.LatencyMs
		ls := loads[q.Model]
		i, _ := slices.BinarySearchFunc(ls, start-1, func(l simLoad, t float64) int {
			if l.loaded < t {
				return -1
			}
			if l.loaded > t {
				return 1
			}
			return 0
		})
		if i == len(ls) || ls[i].loaded > end+50 {
			continue // slow but warm: no load of its model while it was held
		}
		l := ls[i]
		c.Matched++
		excess := q.LatencyMs/1000 - float64(size[q.Model])/loadBPS
		if !l.threadFree() {
			queued = append(queued, excess)
			continue
		}
		c.ThreadFree++
		free = append(free, excess)
		toApp = append(toApp, (l.approved-start)/1000)
		load = append(load, (l.loaded-l.started)/1000)
		toSrv = append(toSrv, (end-l.loaded)/1000)
	}
	c.ExcessFreeP50, c.ExcessFreeP99 = quantile(free, 0.5), quantile(free, 0.99)
	c.ExcessQueuedP50, c.ExcessQueuedP99 = quantile(queued, 0.5), quantile(queued, 0.99)
	c.ToApprovedP50, c.ToApprovedP99 = quantile(toApp, 0.5), quantile(toApp, 0.99)
	c.LoadP50, c.LoadP99 = quantile(load, 0.5), quantile(load, 0.99)
	c.ToServedP50, c.ToServedP99 = quantile(toSrv, 0.5), quantile(toSrv, 0.99)
	return c
}
