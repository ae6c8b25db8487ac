package main

import (
	"context"
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"testing"

	"github.com/tfgate/tfgate/internal/testwait"
)

func TestParseGCFlags(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{in: "2GiB", want: 2 << 30},
		{in: "512MiB", want: 512 << 20},
		{in: "1000", want: 1000},
		{in: "10B", want: 10},
		{in: "off", want: math.MaxInt64},
		{in: "2GB", wantErr: true},
		{in: "-1", wantErr: true},
		{in: "", wantErr: true},
	} {
		got, err := parseBytes(tc.in)
		if (err != nil) != tc.wantErr || (!tc.wantErr && got != tc.want) {
			t.Errorf("parseBytes(%q) = %d, %v; want %d (error: %v)", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
	for _, tc := range []struct {
		in      string
		want    int
		wantErr bool
	}{
		{in: "400", want: 400},
		{in: "off", want: -1},
		{in: "0", wantErr: true},
		{in: "x", wantErr: true},
	} {
		got, err := parseGOGC(tc.in)
		if (err != nil) != tc.wantErr || (!tc.wantErr && got != tc.want) {
			t.Errorf("parseGOGC(%q) = %d, %v; want %d (error: %v)", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestGCHeadroomPrecedence(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	noCgroup := cgroupMemoryMax() == 0
	for _, tc := range []struct {
		name string
		g    gcSettings
		env  map[string]string
		want int64
	}{
		{name: "default", want: defaultHeadroom},
		{name: "flag", g: gcSettings{headroom: "64MiB"}, want: 64 << 20},
		{name: "off", g: gcSettings{headroom: "off"}, want: 0},
		{name: "--gomemlimit wins", g: gcSettings{memLimit: "1GiB", headroom: "64MiB"}, want: 0},
		{name: "GOMEMLIMIT wins", env: map[string]string{"GOMEMLIMIT": "1GiB"}, want: 0},
		{name: "--gogc off", g: gcSettings{gogc: "off"}, want: 0},
		{name: "GOGC off", env: map[string]string{"GOGC": "off"}, want: 0},
	} {
		got, err := tc.g.apply(env(tc.env))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if tc.want != 0 && !noCgroup {
			tc.want = 0 // the cgroup's limit wins
		}
		if got != tc.want {
			t.Errorf("%s: headroom %d, want %d", tc.name, got, tc.want)
		}
	}
	if _, err := (gcSettings{headroom: "lots"}).apply(env(nil)); err == nil || !strings.Contains(err.Error(), "--gc-headroom") {
		t.Errorf("bad --gc-headroom: err %v, want one naming the flag", err)
	}
}

func TestHeadroomLimit(t *testing.T) {
	s := make([]metrics.Sample, len(headroomSamples))
	for i, n := range headroomSamples {
		s[i].Name = n
	}
	metrics.Read(s)
	live := int64(s[1].Value.Uint64())
	got := headroomLimit(s, 128<<20)
	if got < live+128<<20 {
		t.Errorf("limit %d below live %d + headroom", got, live)
	}
	total := int64(s[2].Value.Uint64())
	if got > total+128<<20 {
		t.Errorf("limit %d above the runtime's total %d + headroom: it counts more than the live heap and other memory", got, total)
	}
}

func TestRunHeadroomSetsTheLimitAfterACollection(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(math.MaxInt64))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); runHeadroom(ctx, 64<<20) }()
	defer func() { cancel(); <-done }()
	runtime.GC()
	testwait.Until(t, "a memory limit near the live heap after a GC", func() bool {
		return debug.SetMemoryLimit(-1) < 1<<40
	})
}
