package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	kgzip "github.com/klauspost/compress/gzip"
	"go.uber.org/goleak"

	"github.com/tfgate/tfgate/internal/testenv"
	"github.com/tfgate/tfgate/modelsync/event"
	"github.com/tfgate/tfgate/modelsync/journal"
	"github.com/tfgate/tfgate/modelsync/publish"
)

var binDir string

func TestMain(m *testing.M) {
	var err error
	if binDir, err = os.MkdirTemp("", "modelsync-bin-"); err != nil {
		panic(err)
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(
			goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
			goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
			goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.RemoveAll(binDir)
	os.Exit(code)
}

var (
	buildOnce sync.Once
	buildErr  error
)

// buildBinary compiles this command once per test run.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(binDir, "modelsync")
	buildOnce.Do(func() {
		out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return bin
}

// bigArchive is a model of nFiles files of fileBytes each, compressible about 10:1 so
// the S3 server (in this process's RAM) holds little while extraction writes a lot.
func bigArchive(t *testing.T, nFiles int, fileBytes int) (archive []byte, sizes map[string]int64) {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := kgzip.NewWriterLevel(&buf, kgzip.BestSpeed)
	tw := tar.NewWriter(zw)
	rng := rand.New(rand.NewSource(1))
	page := make([]byte, 4096)
	sizes = map[string]int64{}
	add := func(name string, size int, fill func([]byte)) {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(size), Typeflag: tar.TypeReg})
		for left := size; left > 0; left -= len(page) {
			fill(page)
			tw.Write(page[:min(left, len(page))])
		}
		sizes[name] = int64(size)
	}
	add("saved_model.pb", 4096, func(p []byte) { copy(p, "graph") })
	for i := range nFiles {
		add(fmt.Sprintf("variables/variables.data-%05d-of-%05d", i, nFiles), fileBytes, func(p []byte) {
			clear(p)
			rng.Read(p[:300])
		})
	}
	tw.Close()
	zw.Close()
	return buf.Bytes(), sizes
}

// sidecarProc is one run of the binary.
type sidecarProc struct {
	cmd     *exec.Cmd
	started chan struct{}
	exited  chan struct{}
}

func startProc(t *testing.T, bin string, args []string, logs io.Writer) *sidecarProc {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"run"}, args...)...)
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &sidecarProc{cmd: cmd, started: make(chan struct{}), exited: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logs, line)
			if strings.Contains(line, `"msg":"modelsync started"`) {
				once.Do(func() { close(p.started) })
			}
		}
		io.Copy(io.Discard, pr)
	}()
	go func() {
		cmd.Wait()
		pw.Close()
		close(p.exited)
	}()
	return p
}

func (p *sidecarProc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// TestCrashSafety SIGKILLs the sidecar at random moments while it publishes 20 versions
// of a ~200 MB model, restarting it each time. A poller watching the base path must
// never see a partial version; temporary directories must be gone after each restart;
// every version must end up published exactly once.
func TestCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("writes ~4 GB; skipped with -short")
	}
	const versions = 20
	nFiles, fileBytes := 4, 50<<20
	bin := buildBinary(t)
	s3srv := testenv.StartS3(t)
	s3srv.CreateBucket(t, "models")
	sqsSrv := testenv.StartSQS(t)
	q := sqsSrv.CreateQueue(t, "crash", testenv.QueueOptions{})
	archive, sizes := bigArchive(t, nFiles, fileBytes)
	sum := sha256.Sum256(archive)
	ctx := context.Background()
	for v := 1; v <= versions; v++ {
		key := fmt.Sprintf("models/big/%d.tar.gz", v)
		out, err := s3srv.Client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("models"), Key: aws.String(key),
			Body: bytes.NewReader(archive), Metadata: map[string]string{publish.MetaSHA256: hex.EncodeToString(sum[:])}})
		if err != nil {
			t.Fatal(err)
		}
		body := event.NewCreated("models", key, int64(len(archive)), aws.ToString(out.ETag), time.Now())
		if v%2 == 0 {
			body = event.WrapSNS(body, "arn:aws:sns:us-east-1:1:models", time.Now())
		}
		sqsSrv.Send(t, q.URL, string(body))
	}
	t.Logf("archive %d bytes, %d MB extracted per version", len(archive), int64(nFiles*fileBytes)>>20)

	base := t.TempDir()
	modelDir := filepath.Join(base, "big")
	args := []string{"-base-path", base, "-queue-url", q.URL, "-sqs-endpoint", sqsSrv.Endpoint, "-bucket", "models",
		"-prefix", "models", "-s3-endpoint", s3srv.Endpoint, "-s3-path-style", "-catch-up=false",
		"-receive-wait", "1s", "-visibility-timeout", "3s", "-retry-delay", "0s", "-concurrency", "4", "-log-level", "info"}
	env := []string{"AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test", "AWS_REGION=us-east-1", "AWS_EC2_METADATA_DISABLED=true"}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	var logs bytes.Buffer
	var logMu sync.Mutex
	logw := writerFunc(func(p []byte) (int, error) { logMu.Lock(); defer logMu.Unlock(); return logs.Write(p) })

	// The poller: what TF Serving would see.
	var partial atomic.Value
	stopPoll := make(chan struct{})
	pollDone := make(chan struct{})
	go func() {
		defer close(pollDone)
		whole := map[string]bool{} // a whole version never changes; check it once
		for {
			select {
			case <-stopPoll:
				return
			default:
			}
			ents, _ := os.ReadDir(modelDir)
			for _, e := range ents {
				if _, err := strconv.ParseInt(e.Name(), 10, 64); err != nil || whole[e.Name()] {
					continue
				}
				whole[e.Name()] = true
				for name, size := range sizes {
					fi, err := os.Stat(filepath.Join(modelDir, e.Name(), name))
					if err != nil || fi.Size() != size {
						whole[e.Name()] = false
						if _, gone := os.Stat(filepath.Join(modelDir, e.Name())); gone == nil {
							partial.Store(fmt.Sprintf("version %s: %s: %v size %v", e.Name(), name, err, fi))
						}
					}
				}
			}
			time.Sleep(time.Millisecond)
		}
	}()
	defer func() { close(stopPoll); <-pollDone }()

	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	published := func() int {
		n := 0
		ents, _ := os.ReadDir(modelDir)
		for _, e := range ents {
			if _, err := strconv.ParseInt(e.Name(), 10, 64); err == nil {
				n++
			}
		}
		return n
	}
	temps := func() []string {
		var out []string
		ents, _ := os.ReadDir(modelDir)
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".tmp-") || strings.HasPrefix(e.Name(), ".del-") {
				out = append(out, e.Name())
			}
		}
		return out
	}
	kills, leftBehind := 0, 0
	for kills < 10 && published() < versions {
		before := temps() // what the killed run left
		leftBehind += len(before)
		p := startProc(t, bin, args, logw)
		select {
		case <-p.started:
		case <-p.exited:
			t.Fatalf("sidecar exited at startup:\n%s", logs.String())
		case <-time.After(30 * time.Second):
			p.kill()
			t.Fatalf("sidecar did not start:\n%s", logs.String())
		}
		// Once started, no temporary directory of the killed run remains.
		for _, name := range before {
			if _, err := os.Lstat(filepath.Join(modelDir, name)); err == nil {
				t.Errorf("after restart %d, the killed run's %s is still there", kills, name)
			}
		}
		time.Sleep(time.Duration(200+rng.Intn(2500)) * time.Millisecond)
		p.kill()
		kills++
	}
	t.Logf("%d kills; %d temporary directories left by killed runs, all removed at restart; %d of %d versions published before the last run",
		kills, leftBehind, published(), versions)

	// A last run without kills completes the rest.
	p := startProc(t, bin, args, logw)
	deadline := time.Now().Add(120 * time.Second)
	for published() < versions || !queueEmpty(t, sqsSrv, q.URL) {
		if time.Now().After(deadline) {
			p.kill()
			t.Fatalf("only %d of %d versions published after the final run\n%s", published(), versions, tail(logs.String()))
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		p.kill()
		t.Errorf("sidecar did not stop on SIGTERM")
	}
	if msg := partial.Load(); msg != nil {
		t.Errorf("the poller saw a partial version: %v", msg)
	}
	ents, _ := os.ReadDir(modelDir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".tmp-") || strings.HasPrefix(e.Name(), ".del-") {
			t.Errorf("leftover %s", e.Name())
		}
	}

	// Exactly once: the journal (read with the history subcommand) shows at most one
	// publish per version, and every version published or found published.
	out, err := exec.Command(bin, "history", "-base-path", base, "-model", "big", "-json").Output()
	if err != nil {
		t.Fatalf("history: %v", err)
	}
	pubs := map[int64]int{}
	seen := map[int64]bool{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var e journal.Entry
		if err := dec.Decode(&e); err != nil {
			break
		}
		if e.Outcome == journal.Published {
			pubs[e.Version]++
		}
		if e.Outcome == journal.Published || e.Outcome == journal.Duplicate {
			seen[e.Version] = true
		}
	}
	for v := int64(1); v <= versions; v++ {
		if pubs[v] > 1 {
			t.Errorf("version %d published %d times", v, pubs[v])
		}
		for name, size := range sizes {
			fi, err := os.Stat(filepath.Join(modelDir, strconv.FormatInt(v, 10), name))
			if err != nil || fi.Size() != size {
				t.Errorf("version %d: %s: %v", v, name, err)
			}
		}
	}
	t.Logf("journal: %d versions with a publish entry, %d published or found published", len(pubs), len(seen))
}

func queueEmpty(t *testing.T, s *testenv.SQSServer, url string) bool {
	v, f := s.Count(t, url)
	return v == 0 && f == 0
}

func tail(s string) string {
	if len(s) > 8000 {
		return s[len(s)-8000:]
	}
	return s
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
