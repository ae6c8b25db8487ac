package modelsync

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/tfgate/tfgate/internal/testenv"
	"github.com/tfgate/tfgate/modelsync/event"
	"github.com/tfgate/tfgate/modelsync/journal"
	"github.com/tfgate/tfgate/modelsync/publish"
)

// env is one test's S3 bucket, SQS queue (with a DLQ) and base path.
type env struct {
	t      testing.TB
	s3     *testenv.S3Server
	sqs    *testenv.SQSServer
	queue  testenv.Queue
	bucket string
	base   string
	s3Addr string // what the sidecar talks to (the S3 server, or a proxy in front of it)
	topic  string // SNS topic the queue is subscribed to, created by the first SNS publish
}

func newEnv(t testing.TB) *env {
	t.Helper()
	e := &env{t: t, s3: testenv.StartS3(t), sqs: testenv.StartSQS(t), bucket: "models", base: t.TempDir()}
	e.s3.CreateBucket(t, e.bucket)
	e.queue = e.sqs.CreateQueue(t, "models-"+strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())),
		testenv.QueueOptions{VisibilityTimeout: 30 * time.Second, MaxReceiveCount: 5})
	e.s3Addr = e.s3.Endpoint
	return e
}

func (e *env) config() Config {
	cfg := DefaultConfig()
	cfg.BasePath = e.base
	cfg.QueueURL = e.queue.URL
	cfg.Bucket = e.bucket
	cfg.Prefix = "models"
	cfg.ReceiveWait = Duration(time.Second)
	cfg.VisibilityTimeout = Duration(10 * time.Second)
	cfg.RetryDelay = Duration(time.Second)
	cfg.ShutdownGrace = Duration(2 * time.Second)
	cfg.FetchBackoff = Duration(10 * time.Millisecond)
	cfg.FetchBackoffMax = Duration(100 * time.Millisecond)
	cfg.CatchUp = false
	return cfg
}

// sidecar is a running Run.
type sidecar struct {
	cancel   context.CancelFunc
	done     chan error
	outcomes chan journal.Entry
	mu       sync.Mutex
	all      []journal.Entry
}

func (e *env) start(cfg Config, deps Deps) *sidecar {
	e.t.Helper()
	sc := &sidecar{done: make(chan error, 1), outcomes: make(chan journal.Entry, 10000)}
	if deps.S3 == nil {
		deps.S3 = testenv.NewS3Client(e.s3Addr)
	}
	if deps.SQS == nil {
		deps.SQS = e.sqs.Client
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.NewTextHandler(testWriter{e.t}, &slog.HandlerOptions{Level: testLogLevel}))
	}
	deps.OnOutcome = func(en journal.Entry) {
		sc.mu.Lock()
		sc.all = append(sc.all, en)
		sc.mu.Unlock()
		sc.outcomes <- en
	}
	ctx, cancel := context.WithCancel(context.Background())
	sc.cancel = cancel
	go func() { sc.done <- Run(ctx, cfg, deps) }()
	e.t.Cleanup(func() { sc.stop(e.t) })
	return sc
}

func (sc *sidecar) stop(t testing.TB) {
	if sc.cancel == nil {
		return
	}
	sc.cancel()
	sc.cancel = nil
	if err := <-sc.done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// wait collects outcomes until n match pred, or fails after a minute.
func (sc *sidecar) wait(t testing.TB, n int, pred func(journal.Entry) bool) []journal.Entry {
	t.Helper()
	var got []journal.Entry
	timeout := time.After(60 * time.Second)
	for len(got) < n {
		select {
		case en := <-sc.outcomes:
			if pred(en) {
				got = append(got, en)
			}
		case err := <-sc.done:
			t.Fatalf("Run returned early: %v", err)
		case <-timeout:
			t.Fatalf("after 60s: %d of %d outcomes; all so far: %+v", len(got), n, sc.snapshot())
		}
	}
	return got
}

func (sc *sidecar) snapshot() []journal.Entry {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return append([]journal.Entry(nil), sc.all...)
}

func outcome(o string) func(journal.Entry) bool {
	return func(e journal.Entry) bool { return e.Outcome == o }
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// modelDir writes a small model version directory and returns it.
func modelDir(t testing.TB, model string, v int64, weights int) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), fmt.Sprintf("%s-%d", model, v))
	files := map[string]string{
		"saved_model.pb":                 "graph " + model,
		"variables/variables.index":      "index",
		"variables/variables.data-00000": strings.Repeat(fmt.Sprintf("%s%d", model, v), weights),
		"assets/vocab.txt":               "a\nb\n",
		"assets.extra/servingsim.json":   fmt.Sprintf(`{"model":%q,"version":%d}`, model, v),
	}
	for name, body := range files {
		p := filepath.Join(d, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// publish uploads a version and notifies the queue: with sns, as production does (the
// S3 event published to an SNS topic the queue is subscribed to), else straight to
// the queue (raw S3 -> SQS delivery).
func (e *env) publish(model string, v int64, dir string, sns bool) publish.Published {
	e.t.Helper()
	opt := publish.PublishOptions{Bucket: e.bucket, Prefix: "models", Model: model, Version: v, Dir: dir, QueueURL: e.queue.URL}
	if sns {
		if e.topic == "" {
			e.topic = e.sqs.CreateTopic(e.t, e.queue.Name+"-events")
			e.sqs.Subscribe(e.t, e.topic, e.queue)
		}
		opt.QueueURL, opt.Topic = "", e.topic
	}
	p, err := publish.PublishWith(context.Background(), publish.PublishClients{S3: e.s3.Client, SQS: e.sqs.Client, SNS: e.sqs.SNS}, opt)
	if err != nil {
		e.t.Fatalf("Publish(%s/%d): %v", model, v, err)
	}
	return p
}

// putRaw uploads bytes under a key, without notifying.
func (e *env) putRaw(key string, body []byte) string {
	e.t.Helper()
	out, err := e.s3.Client.PutObject(context.Background(), &s3.PutObjectInput{
		Bucket: aws.String(e.bucket), Key: aws.String(key), Body: bytes.NewReader(body)})
	if err != nil {
		e.t.Fatalf("put %s: %v", key, err)
	}
	return strings.Trim(aws.ToString(out.ETag), `"`)
}

func (e *env) notify(key string, size int64, etag string) {
	e.t.Helper()
	e.sqs.Send(e.t, e.queue.URL, string(event.NewCreated(e.bucket, key, size, etag, time.Now())))
}

// tree lists files under dir with their content, skipping the state directory.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() && rel == ".modelsync" {
			return filepath.SkipDir
		}
		if !d.IsDir() {
			b, _ := os.ReadFile(p)
			out[filepath.ToSlash(rel)] = string(b)
		}
		return nil
	})
	return out
}

// assertNoTemp fails if any temporary or half-deleted directory is visible.
func assertNoTemp(t *testing.T, base string) {
	t.Helper()
	filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err == nil && (strings.HasPrefix(d.Name(), ".tmp-") || strings.HasPrefix(d.Name(), ".del-")) {
			t.Errorf("leftover %s", p)
		}
		return nil
	})
}

// sameTree fails unless version dir got holds exactly the files of want.
func sameTree(t *testing.T, got, want string) {
	t.Helper()
	g, w := tree(t, got), tree(t, want)
	var gk, wk []string
	for k := range g {
		gk = append(gk, k)
	}
	for k := range w {
		wk = append(wk, k)
	}
	sort.Strings(gk)
	sort.Strings(wk)
	if strings.Join(gk, ",") != strings.Join(wk, ",") {
		t.Fatalf("%s has %q, want %q", got, gk, wk)
	}
	for k := range w {
		if g[k] != w[k] {
			t.Errorf("%s/%s differs from the published file", got, k)
		}
	}
}

// queueEmpty waits until the queue has no visible or in-flight messages.
func (e *env) queueEmpty() {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		v, f := e.sqs.Count(e.t, e.queue.URL)
		if v == 0 && f == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("queue still has %d visible and %d in-flight messages", v, f)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var testLogLevel = func() slog.Level {
	if os.Getenv("MODELSYNC_TEST_DEBUG") != "" {
		return slog.LevelDebug
	}
	return slog.LevelWarn
}()
