package store

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"testing"
)

func publish(t *testing.T, s *Store, model string, v int64, content string) error {
	t.Helper()
	p, err := s.Begin(model, v)
	if err != nil {
		t.Fatalf("Begin(%s, %d): %v", model, v, err)
	}
	if err := os.WriteFile(filepath.Join(p.Dir(), "saved_model.pb"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p.Commit(Source{SHA256: content, Size: int64(len(content))})
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

func TestCommitLookupVersions(t *testing.T) {
	s, err := New(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	if err := publish(t, s, "m", 2, "two"); err != nil {
		t.Fatal(err)
	}
	if err := publish(t, s, "m", 10, "ten"); err != nil {
		t.Fatal(err)
	}
	vs, _ := s.Versions("m")
	if !reflect.DeepEqual(vs, []int64{2, 10}) {
		t.Errorf("Versions = %v, want [2 10]", vs)
	}
	ok, src, err := s.Lookup("m", 10)
	if !ok || err != nil || src == nil || src.SHA256 != "ten" {
		t.Errorf("Lookup(m,10) = %v %+v %v", ok, src, err)
	}
	if ok, _, _ := s.Lookup("m", 3); ok {
		t.Errorf("Lookup(m,3) found an unpublished version")
	}
	// A second publish of the same version changes nothing.
	if err := publish(t, s, "m", 10, "other"); !errors.Is(err, ErrExists) {
		t.Errorf("republish = %v, want ErrExists", err)
	}
	b, _ := os.ReadFile(filepath.Join(s.VersionDir("m", 10), "saved_model.pb"))
	if string(b) != "ten" {
		t.Errorf("republish overwrote content: %q", b)
	}
	// An empty directory in the way is not replaced either (plain rename would).
	if err := os.Mkdir(s.VersionDir("m", 11), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := publish(t, s, "m", 11, "eleven"); !errors.Is(err, ErrExists) {
		t.Errorf("publish over empty dir = %v, want ErrExists", err)
	}
	got := names(t, s.ModelDir("m"))
	want := []string{".10.source.json", ".11.source.json", ".2.source.json", "10", "11", "2"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("model dir = %q, want %q (no temporary directories left)", got, want)
	}
}

func TestBadNames(t *testing.T) {
	s, _ := New(t.TempDir(), false)
	for _, m := range []string{"", ".", "..", ".hidden", "a/b", "a\x00", "two\nlines", "bad\xffutf8", "tab\there", "bell\a", "zw\u200bsp"} {
		if _, err := s.Begin(m, 1); !errors.Is(err, ErrBadName) {
			t.Errorf("Begin(%q) = %v, want ErrBadName", m, err)
		}
	}
	if _, err := s.Begin("m", -1); !errors.Is(err, ErrBadName) {
		t.Errorf("Begin(m, -1) = %v, want ErrBadName", err)
	}
}

func TestRetain(t *testing.T) {
	tests := []struct {
		name    string
		keep    int
		pinned  []int64
		want    []int64
		removed []int64
	}{
		{name: "keep all", keep: 0, want: []int64{1, 2, 3, 4}},
		{name: "keep two", keep: 2, want: []int64{3, 4}, removed: []int64{1, 2}},
		{name: "pinned survives", keep: 1, pinned: []int64{2}, want: []int64{2, 4}, removed: []int64{1, 3}},
		{name: "keep more than exist", keep: 9, want: []int64{1, 2, 3, 4}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := New(t.TempDir(), false)
			for v := int64(1); v <= 4; v++ {
				if err := publish(t, s, "m", v, "x"); err != nil {
					t.Fatal(err)
				}
			}
			pin := func(m string, v int64) bool {
				for _, p := range tc.pinned {
					if p == v {
						return true
					}
				}
				return false
			}
			removed, err := s.Retain("m", tc.keep, pin)
			if err != nil {
				t.Fatal(err)
			}
			vs, _ := s.Versions("m")
			if !reflect.DeepEqual(vs, tc.want) || !reflect.DeepEqual(removed, tc.removed) {
				t.Errorf("Retain(keep=%d, pinned=%v): versions %v removed %v, want %v removed %v",
					tc.keep, tc.pinned, vs, removed, tc.want, tc.removed)
			}
		})
	}
}

func TestCleanStale(t *testing.T) {
	s, _ := New(t.TempDir(), false)
	if err := publish(t, s, "m", 1, "one"); err != nil {
		t.Fatal(err)
	}
	p, _ := s.Begin("m", 2) // never committed: a crash
	os.WriteFile(filepath.Join(p.Dir(), "half"), []byte("x"), 0o644)
	os.Mkdir(filepath.Join(s.ModelDir("m"), ".del-1-abc"), 0o755)
	os.WriteFile(filepath.Join(s.ModelDir("m"), ".2.source.json.tmp"), nil, 0o644)
	removed, err := s.CleanStale()
	if err != nil || len(removed) != 3 {
		t.Errorf("CleanStale = %v, %v; want 3 removed", removed, err)
	}
	if got := names(t, s.ModelDir("m")); !reflect.DeepEqual(got, []string{".1.source.json", "1"}) {
		t.Errorf("after CleanStale: %q", got)
	}
}

// TestAbortLeavesNoModelDir: a version that is never published (a rejected archive, an
// object that does not exist) leaves no model directory behind, while a model
// directory that existed before is kept.
func TestAbortLeavesNoModelDir(t *testing.T) {
	s, _ := New(t.TempDir(), false)
	p, err := s.Begin("ghost", 1)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(p.Dir(), "half"), []byte("x"), 0o644)
	if err := p.Abort(); err != nil {
		t.Fatal(err)
	}
	if got := names(t, s.Base()); len(got) != 0 {
		t.Errorf("base after an aborted first version = %q, want empty", got)
	}
	if err := publish(t, s, "m", 1, "one"); err != nil {
		t.Fatal(err)
	}
	p, _ = s.Begin("m", 2)
	p.Abort()
	if got := names(t, s.ModelDir("m")); !reflect.DeepEqual(got, []string{".1.source.json", "1"}) {
		t.Errorf("model dir after an aborted second version = %q", got)
	}
	// A crash between Begin and Abort: CleanStale removes the leftover model directory.
	if _, err := s.Begin("crashed", 3); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CleanStale(); err != nil {
		t.Fatal(err)
	}
	if got := names(t, s.Base()); !reflect.DeepEqual(got, []string{"m"}) {
		t.Errorf("base after CleanStale = %q, want [m]", got)
	}
}
