package exposure

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
)

// lumberjack starts its mill goroutine at the first open and never stops it
// (natefinch/lumberjack#56); it holds no file.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("gopkg.in/natefinch/lumberjack%2ev2.(*Logger).millRun"))
}

func rec(i int) Record {
	return Record{
		Time: time.Date(2026, 12, 3, 7, 0, 0, i, time.UTC), RequestID: "req", Model: "reviews",
		Experiment: "e", Arm: "control", Version: 1, Route: "experiment", Key: "customer-42",
		Code: codes.OK, Latency: 1500 * time.Microsecond,
	}
}

func readLines(t *testing.T, b []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

func TestRecordsAndFlushOnClose(t *testing.T) {
	for _, tc := range []struct {
		name     string
		hash     bool
		wantKey  string
		wantHash bool
	}{
		{name: "raw key", wantKey: "customer-42"},
		{name: "hashed key", hash: true, wantHash: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out syncBuffer
			cfg := Config{Path: "test", HashKeys: tc.hash, HashSecret: []byte("0123456789abcdef-secret"), FlushInterval: time.Hour}
			l, err := New(cfg, Options{Output: &out})
			if err != nil {
				t.Fatal(err)
			}
			const n = 5000
			var wg sync.WaitGroup
			for g := 0; g < 8; g++ {
				wg.Go(func() {
					for i := g; i < n; i += 8 {
						r := rec(i)
						if i == 0 {
							r.TraceID = trace.TraceID{1, 2, 3}
							r.Code = codes.Unavailable
						}
						l.Expose(r)
					}
				})
			}
			wg.Wait()
			if err := l.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			st := l.Stats()
			lines := readLines(t, out.Bytes())
			if st.Dropped() != 0 || st.Written != n || len(lines) != n {
				t.Fatalf("stats %+v, %d lines; want %d written and in the file (flushed by Close), none dropped", st, len(lines), n)
			}
			for _, m := range lines {
				if m["model"] != "reviews" || m["arm"] != "control" || m["version"] != 1.0 || m["route"] != "experiment" || m["latency_ms"] != 1.5 {
					t.Fatalf("record %v", m)
				}
				if m["code"] == "Unavailable" && m["trace_id"] != (trace.TraceID{1, 2, 3}).String() {
					t.Errorf("trace id %v", m["trace_id"])
				}
				key, _ := m["key"].(string)
				hash, _ := m["key_hash"].(string)
				if key != tc.wantKey || (hash != "") != tc.wantHash || (tc.wantHash && len(hash) != 32) {
					t.Fatalf("key %q key_hash %q; want key %q, hash %v", key, hash, tc.wantKey, tc.wantHash)
				}
			}
			if tc.hash && strings.Contains(out.String(), "customer-42") {
				t.Error("a raw routing key reached the output with hash_keys on")
			}
		})
	}
}

func TestSameSecretSameHash(t *testing.T) {
	hashOf := func(secret string) string {
		var out syncBuffer
		l, err := New(Config{Path: "x", HashKeys: true, HashSecret: []byte(secret)}, Options{Output: &out})
		if err != nil {
			t.Fatal(err)
		}
		l.Expose(rec(0))
		if err := l.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		return readLines(t, out.Bytes())[0]["key_hash"].(string)
	}
	a, b, c := hashOf("secret-number-one"), hashOf("secret-number-one"), hashOf("secret-number-two")
	if a != b || a == c {
		t.Errorf("hashes %s %s %s: want equal under one secret, different under another", a, b, c)
	}
}

// blocking is an output whose Write waits until release is closed.
type blocking struct {
	entered chan struct{}
	once    sync.Once
	release chan struct{}
	syncBuffer
}

func (b *blocking) Write(p []byte) (int, error) {
	b.once.Do(func() { close(b.entered) })
	<-b.release
	return b.syncBuffer.Write(p)
}

func TestFullQueueDropsWithoutBlocking(t *testing.T) {
	out := &blocking{entered: make(chan struct{}), release: make(chan struct{})}
	logs := &countHandler{}
	// The flush timer only makes the writer start its first Write soon; the
	// test waits for that event, not for any time.
	l, err := New(Config{Path: "x", Buffer: 64, FlushInterval: time.Millisecond, DropLogInterval: time.Hour}, Options{Output: out, Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	l.Expose(rec(0))
	<-out.entered // the writer is stuck in Write
	// Every Expose must return although nothing is being written: a blocking
	// Expose would hang this loop (and the test).
	const n = 10000
	for i := 0; i < n; i++ {
		l.Expose(rec(i))
	}
	st := l.Stats()
	if st.DroppedFull < n-64 {
		t.Fatalf("dropped %d of %d with a 64-record queue and a stuck writer", st.DroppedFull, n)
	}
	close(out.release)
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	st = l.Stats()
	total := uint64(1 + n)
	if got := st.Written + st.DroppedFull; got != total {
		t.Errorf("written %d + dropped %d = %d, want every one of %d records accounted for", st.Written, st.DroppedFull, got, total)
	}
	if lines := len(readLines(t, out.Bytes())); uint64(lines) != st.Written {
		t.Errorf("%d lines, %d counted written", lines, st.Written)
	}
	if got := logs.count("exposure: records dropped"); got != 1 {
		t.Errorf("%d drop log lines for %d drops within one interval, want 1", got, st.DroppedFull)
	}
}

type failing struct{}

func (failing) Write([]byte) (int, error) { return 0, errors.New("no space left on device") }

func TestWriteErrorDropsAndCounts(t *testing.T) {
	l, err := New(Config{Path: "x"}, Options{Output: failing{}})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		l.Expose(rec(i))
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := l.Stats(); st.DroppedWrite != 100 || st.Written != 0 {
		t.Errorf("stats %+v, want 100 dropped on write errors", st)
	}
	l.Expose(rec(0))
	if st := l.Stats(); st.DroppedClosed != 1 {
		t.Errorf("after Close: %+v, want the record dropped as closed", st)
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{name: "no path", cfg: Config{}, want: "no path"},
		{name: "missing directory", cfg: Config{Path: filepath.Join(dir, "nope", "exposure.jsonl")}, want: "cannot open it for writing"},
		{name: "a directory", cfg: Config{Path: dir}, want: "cannot open it for writing"},
		{name: "hash without secret", cfg: Config{Path: filepath.Join(dir, "e.jsonl"), HashKeys: true}, want: "needs a secret"},
		{name: "short secret", cfg: Config{Path: filepath.Join(dir, "e.jsonl"), HashKeys: true, HashSecret: []byte("short")}, want: "at least 16"},
		{name: "negative", cfg: Config{Path: filepath.Join(dir, "e.jsonl"), Buffer: -1}, want: "must not be negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := New(tc.cfg, Options{})
			if err == nil {
				_ = l.Close(context.Background())
				t.Fatalf("New(%+v) = nil error, want %q", tc.cfg, tc.want)
			}
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New(%+v) = %v, want ErrConfig with %q", tc.cfg, err, tc.want)
			}
		})
	}
}

func TestRotatesBySize(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "exposure.jsonl")
	const n = 8000 // ~250 bytes each: two files' worth
	l, err := New(Config{Path: path, MaxSizeMB: 1, MaxBackups: 3, Buffer: n}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		r := rec(i)
		r.RequestID = strings.Repeat("r", 100)
		l.Expose(r)
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "exposure*.jsonl"))
	if len(files) < 2 {
		t.Fatalf("files %v: want the log rotated past 1 MiB", files)
	}
	var lines int
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lines += len(readLines(t, b))
	}
	if st := l.Stats(); lines != n || st.Written != n {
		t.Errorf("%d lines across %v, stats %+v; want %d", lines, files, st, n)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

func (s *syncBuffer) String() string { return string(s.Bytes()) }

// countHandler counts log records by message.
type countHandler struct {
	mu   sync.Mutex
	msgs []string
}

func (h *countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs = append(h.msgs, r.Message)
	return nil
}
func (h *countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countHandler) WithGroup(string) slog.Handler      { return h }

func (h *countHandler) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, m := range h.msgs {
		if m == msg {
			n++
		}
	}
	return n
}

// BenchmarkExpose is the request path's share: one non-blocking queue send.
func BenchmarkExpose(b *testing.B) {
	l, err := New(Config{Path: "x", Buffer: 1 << 16}, Options{Output: io.Discard})
	if err != nil {
		b.Fatal(err)
	}
	r := rec(0)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Expose(r)
		}
	})
	b.StopTimer()
	_ = l.Close(context.Background())
}

// BenchmarkWriter is the writer goroutine's cost per record: encoding (and
// hashing the key), batched writes to io.Discard.
func BenchmarkWriter(b *testing.B) {
	for _, tc := range []struct {
		name string
		hash bool
	}{{"plain", false}, {"hash", true}} {
		b.Run(tc.name, func(b *testing.B) {
			l := &Log{out: io.Discard, log: slog.New(slog.DiscardHandler)}
			if tc.hash {
				l.mac = hmac.New(sha256.New, []byte("0123456789abcdef0123"))
			}
			w := writer{l: l}
			r := rec(0)
			r.TraceID = trace.TraceID{1, 2, 3}
			b.ReportAllocs()
			for b.Loop() {
				w.add(r)
				if w.buf.Len() >= batchBytes {
					w.write()
				}
			}
		})
	}
}
