package journal

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestAppendQuery(t *testing.T) {
	dir := t.TempDir()
	j, err := Open(dir, Options{MaxBytes: 600, MaxFiles: 100})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := Published
			if i%4 == 0 {
				out = Failed
			}
			e := Entry{Time: t0.Add(time.Duration(i) * time.Minute), Model: fmt.Sprintf("m%d", i%2), Version: int64(i),
				Outcome: out, Bytes: int64(100 - i), PhasesMS: map[string]float64{"total": float64((i * 7) % 20)}} // distinct totals
			if err := j.Append(e); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	j.Close()
	// A torn last line, as after a crash mid-write.
	f, _ := os.OpenFile(filepath.Join(dir, liveName), os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"time":"2026-`)
	f.Close()
	if files, _ := rotated(dir); len(files) == 0 {
		t.Errorf("no rotation at MaxBytes 600")
	}
	tests := []struct {
		name      string
		f         Filter
		wantN     int
		wantFirst int64
	}{
		{name: "all by time", f: Filter{}, wantN: 20, wantFirst: 0},
		{name: "model m1", f: Filter{Model: "m1"}, wantN: 10, wantFirst: 1},
		{name: "failed", f: Filter{Outcome: []string{Failed}}, wantN: 5, wantFirst: 0},
		{name: "since", f: Filter{Since: t0.Add(15 * time.Minute)}, wantN: 5, wantFirst: 15},
		{name: "until", f: Filter{Until: t0.Add(4 * time.Minute)}, wantN: 5, wantFirst: 0},
		{name: "newest first limit", f: Filter{Desc: true, Limit: 3}, wantN: 3, wantFirst: 19},
		{name: "largest", f: Filter{Sort: "bytes", Desc: true, Limit: 1}, wantN: 1, wantFirst: 0},
		{name: "slowest", f: Filter{Sort: "duration", Desc: true, Limit: 1}, wantN: 1, wantFirst: 17},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, bad, err := Query(dir, tc.f)
			if err != nil {
				t.Fatal(err)
			}
			if bad != 1 {
				t.Errorf("bad lines = %d, want 1 (the torn one)", bad)
			}
			if len(got) != tc.wantN || (len(got) > 0 && got[0].Version != tc.wantFirst) {
				t.Errorf("Query(%+v) = %d entries, first %+v; want %d, first version %d", tc.f, len(got), got, tc.wantN, tc.wantFirst)
			}
		})
	}
}

func TestFilterValidate(t *testing.T) {
	err := Filter{Sort: "size", Outcome: []string{"ok"}, Limit: -1}.Validate()
	for _, want := range []string{"sort", "outcome", "limit"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate = %v, want it to mention %s", err, want)
		}
	}
}

func TestRotationBounded(t *testing.T) {
	dir := t.TempDir()
	j, _ := Open(dir, Options{MaxBytes: 200, MaxFiles: 2})
	for i := range 50 {
		j.Append(Entry{Time: time.Now(), Model: "m", Version: int64(i), Outcome: Published})
	}
	j.Close()
	files, _ := rotated(dir)
	if len(files) != 2 {
		t.Errorf("rotated files = %d, want 2", len(files))
	}
}

// TestHostileInputBounded: a notification with a 250,000-character key must not write a
// line readers cannot read, and a line too long to read (written before records were
// bounded, or damaged) is skipped and counted rather than failing the query.
func TestHostileInputBounded(t *testing.T) {
	dir := t.TempDir()
	j, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	key := strings.Repeat("k\"\\", 250000/3)
	t0 := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	if err := j.Append(Entry{Time: t0, Key: key, Outcome: Rejected, Reason: "key " + key + " matches none of " + key}); err != nil {
		t.Fatal(err)
	}
	j.Close()
	fi, err := os.Stat(filepath.Join(dir, liveName))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > 8*MaxFieldBytes {
		t.Errorf("journal line is %d bytes for one hostile record, want <= %d", fi.Size(), 8*MaxFieldBytes)
	}
	// An old, oversized line between two good ones.
	f, _ := os.OpenFile(filepath.Join(dir, liveName), os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"time":"2026-12-03T00:00:01Z","outcome":"rejected","key":"` + strings.Repeat("x", 4500000) + "\"}\n")
	f.WriteString(`{"time":"2026-12-03T00:00:02Z","outcome":"published","model":"m"}` + "\n")
	f.Close()
	got, bad, err := Query(dir, Filter{})
	if err != nil {
		t.Fatalf("Query = %v, want the readable entries", err)
	}
	if len(got) != 2 || bad != 1 {
		t.Fatalf("Query: %d entries, %d bad; want 2 and 1", len(got), bad)
	}
	if k := got[0].Key; len(k) > MaxFieldBytes || !strings.Contains(k, "[cut from ") {
		t.Errorf("stored key is %d bytes (%q...), want <= %d with a cut marker", len(k), k[:min(len(k), 40)], MaxFieldBytes)
	}
	if got[1].Model != "m" {
		t.Errorf("entry after the long line = %+v", got[1])
	}
}

func TestTruncate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{strings.Repeat("a", 40), 30, strings.Repeat("a", 8) + "...[cut from 40 bytes]"},
		{strings.Repeat("é", 20), 30, strings.Repeat("é", 4) + "...[cut from 40 bytes]"},
	} {
		if got := Truncate(tc.in, tc.n); got != tc.want || len(got) > tc.n {
			t.Errorf("Truncate(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}
