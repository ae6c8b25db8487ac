package main

import (
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// defaultGOGC is the gateway's GC target percentage unless --gogc or GOGC says
// otherwise. The gateway's live heap is small (routing snapshot, connections)
// while every request allocates, so at GOGC=100 the collector runs every few
// milliseconds at load and also shrinks the stacks of idle stream workers, which
// then grow again. 400 measured 121-125 -> 96-98 µs CPU per request at saturation
// (make bench's overhead scenario, 2 runs each). The memory bound is a memory
// limit: GOMEMLIMIT, or else one kept at a fixed headroom above the live heap
// (headroom.go), which only binds once the live heap is catalog-sized.
const defaultGOGC = 400

// gcSettings are --gogc and --gomemlimit as given ("" when not given), and
// the other per-request cost settings of the process (--rpc-size-metrics).
type gcSettings struct {
	gogc, memLimit, headroom string
	rpcSizeMetrics           bool
}

// apply sets the GC percentage and the soft memory limit. A flag wins over the
// environment (GOGC, GOMEMLIMIT), which wins over the defaults: GOGC 400 and a
// memory limit of 90% of the cgroup's memory.max when there is one. When no
// memory limit is set that way it returns the heap headroom (--gc-headroom,
// default defaultHeadroom; 0 when off or GOGC is off) for runHeadroom to keep.
func (g gcSettings) apply(getenv func(string) string) (int64, error) {
	headroom := int64(defaultHeadroom)
	if g.headroom != "" {
		n, err := parseBytes(g.headroom)
		if err != nil {
			return 0, fmt.Errorf("--gc-headroom: %w", err)
		}
		if n == math.MaxInt64 { // off
			n = 0
		}
		headroom = n
	}
	switch {
	case g.gogc != "":
		p, err := parseGOGC(g.gogc)
		if err != nil {
			return 0, fmt.Errorf("--gogc: %w", err)
		}
		debug.SetGCPercent(p)
		if p < 0 {
			headroom = 0 // GOGC off: only a limit set on purpose collects
		}
	case getenv("GOGC") == "off":
		headroom = 0
	case getenv("GOGC") == "":
		debug.SetGCPercent(defaultGOGC)
	}
	switch {
	case g.memLimit != "":
		n, err := parseBytes(g.memLimit)
		if err != nil {
			return 0, fmt.Errorf("--gomemlimit: %w", err)
		}
		debug.SetMemoryLimit(n)
		return 0, nil
	case getenv("GOMEMLIMIT") != "":
		return 0, nil
	default:
		if n := cgroupMemoryMax(); n > 0 {
			debug.SetMemoryLimit(n / 10 * 9)
			return 0, nil
		}
	}
	return headroom, nil
}

func parseGOGC(s string) (int, error) {
	if s == "off" {
		return -1, nil
	}
	p, err := strconv.Atoi(s)
	if err != nil || p <= 0 {
		return 0, fmt.Errorf("%q: want a positive percentage or off", s)
	}
	return p, nil
}

// parseBytes reads a byte count with an optional B, KiB, MiB, GiB or TiB suffix
// (GOMEMLIMIT's syntax); "off" is no limit.
func parseBytes(s string) (int64, error) {
	if s == "off" {
		return math.MaxInt64, nil
	}
	num, mult := s, int64(1)
	for i, suf := range []string{"TiB", "GiB", "MiB", "KiB", "B"} {
		if strings.HasSuffix(s, suf) {
			num, mult = strings.TrimSuffix(s, suf), int64(1)<<(10*(4-i))
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q: want a positive byte count such as 2GiB, or off", s)
	}
	return n * mult, nil
}

// cgroupMemoryMax is the cgroup v2 memory limit of this process, 0 when there
// is none or it cannot be read.
func cgroupMemoryMax() int64 {
	b, err := os.ReadFile("/sys/fs/cgroup/memory.max")
	if err != nil {
		return 0
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0 // "max": unlimited
	}
	return n
}
