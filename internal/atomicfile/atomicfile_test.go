package atomicfile

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
)

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
	return out
}

func TestWriteReplaces(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "models.config")
	for _, content := range []string{"one", "two"} {
		if err := Write(p, []byte(content), 0o640, true); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil || string(b) != content {
			t.Fatalf("read = %q, %v; want %q", b, err, content)
		}
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640", fi.Mode().Perm())
	}
	if got := names(t, dir); len(got) != 1 {
		t.Errorf("directory holds %q, want only the file", got)
	}
}

// TestFailureLeavesNoTemp: the old code wrote p+".tmp" and left it behind when the
// rename failed.
func TestFailureLeavesNoTemp(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "target")
	if err := os.Mkdir(p, 0o755); err != nil { // a directory: rename of a file over it fails
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(p, "x"), nil, 0o644)
	if err := Write(p, []byte("data"), 0o644, false); err == nil {
		t.Fatal("Write over a non-empty directory succeeded")
	}
	if got := names(t, dir); len(got) != 1 || got[0] != "target" {
		t.Errorf("after a failed write the directory holds %q, want only target", got)
	}
	if err := Write(filepath.Join(dir, "missing", "f"), nil, 0o644, false); err == nil {
		t.Error("Write into a missing directory succeeded")
	}
}

func TestConcurrentWritersDoNotShareTemp(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := Write(p, []byte{byte('a' + i)}, 0o644, false); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	b, _ := os.ReadFile(p)
	if len(b) != 1 {
		t.Errorf("content %q, want one writer's byte", b)
	}
	if got := names(t, dir); len(got) != 1 {
		t.Errorf("directory holds %q, want only f", got)
	}
}
