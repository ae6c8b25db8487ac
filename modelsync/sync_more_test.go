package modelsync

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/tfgate/tfgate/internal/testenv"
	"github.com/tfgate/tfgate/internal/testwait"

	"github.com/tfgate/tfgate/modelsync/event"
	"github.com/tfgate/tfgate/modelsync/journal"
	"github.com/tfgate/tfgate/modelsync/publish"
	"github.com/tfgate/tfgate/modelsync/store"
)

func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("extract", "testdata", name+".tar.gz"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBadInputRejected(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.MaxMessageBytes = 4 << 10
	cfg.Limits.MaxTotalBytes = 32 << 20
	sc := e.start(cfg, Deps{})

	send := func(body string) { e.sqs.Send(t, e.queue.URL, body) }
	send("this is not JSON")
	send(`{"Records":[{"eventName":"ObjectCreated:Put"}]}`)
	send(`{"Records":[{"eventName":"ObjectMangled:Put","s3":{"bucket":{"name":"models"},"object":{"key":"models/x/1.tar.gz"}}}]}`)
	send(`{"Records":[` + strings.Repeat(" ", 8<<10) + `]}`)
	send(`{"Service":"Amazon S3","Event":"s3:TestEvent"}`) // acknowledged, not journaled
	etag := e.putRaw("models/ctr/latest.tar.gz", fixture(t, "good-contents"))
	e.notify("models/ctr/latest.tar.gz", 10, etag)
	archives := []string{"traversal", "absolute", "symlink-escape", "symlink-write-through", "hardlink-escape",
		"device", "fifo", "bomb-header", "bomb-total", "truncated-gzip", "truncated-trailer", "empty", "not-gzip"}
	for i, name := range archives {
		key := fmt.Sprintf("models/bad-%s/%d.tar.gz", name, i+1)
		body := fixture(t, name)
		e.notify(key, int64(len(body)), e.putRaw(key, body))
	}
	e.notify("models/gone/1.tar.gz", 100, "") // never uploaded

	want := 5 + len(archives) + 1
	got := sc.wait(t, want, outcome(journal.Rejected))
	reasons := map[string]string{}
	for _, en := range got {
		reasons[en.Model+"|"+en.Key] = en.Reason
		if en.Reason == "" {
			t.Errorf("rejection without a reason: %+v", en)
		}
	}
	for i, name := range archives {
		r := reasons[fmt.Sprintf("bad-%s|models/bad-%s/%d.tar.gz", name, name, i+1)]
		if r == "" {
			t.Errorf("archive %s: no rejection recorded; got %v", name, reasons)
		}
	}
	if r := reasons["gone|models/gone/1.tar.gz"]; !strings.Contains(r, "not found") {
		t.Errorf("missing object: reason %q", r)
	}
	e.queueEmpty()
	// Nothing partial is visible: no version directory at all, no temporary left.
	for p := range tree(t, e.base) {
		if !strings.HasPrefix(filepath.Base(p), ".") {
			t.Errorf("rejected input left %s", p)
		}
	}
	assertNoTemp(t, e.base)
	if _, err := os.Lstat("/tmp/tfgate-evil"); err == nil {
		t.Errorf("an archive escaped to /tmp/tfgate-evil")
	}
	// And the sidecar still works.
	e.publish("ctr", 5, modelDir(t, "ctr", 5, 10), false)
	sc.wait(t, 1, outcome(journal.Published))
}

func TestDuplicatesAndConflicts(t *testing.T) {
	e := newEnv(t)
	sc := e.start(e.config(), Deps{})
	first := modelDir(t, "m", 1, 100)
	p := e.publish("m", 1, first, false)
	sc.wait(t, 1, outcome(journal.Published))

	e.notify(p.Key, p.Size, p.ETag) // redelivered / duplicate notification
	e.notify(p.Key, p.Size, "")     // one without an ETag: checked with HEAD
	dups := sc.wait(t, 2, outcome(journal.Duplicate))
	t.Logf("duplicates: %q / %q", dups[0].Reason, dups[1].Reason)

	e.publish("m", 1, modelDir(t, "m", 1, 200), true) // same version, different bytes
	c := sc.wait(t, 1, outcome(journal.Conflict))
	if !strings.Contains(c[0].Reason, "different object") {
		t.Errorf("conflict reason %q", c[0].Reason)
	}
	sameTree(t, filepath.Join(e.base, "m", "1"), first)
	e.queueEmpty()
}

// flakyS3 is a proxy in front of the S3 server that fails, truncates and delays GETs.
type flakyS3 struct {
	target   *url.URL
	gets     atomic.Int64
	ranged   atomic.Int64
	failAll  atomic.Bool
	delay    atomic.Int64 // nanoseconds before each GET
	schedule func(n int64) string
}

func (f *flakyS3) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	mode := "pass"
	if r.Method == http.MethodGet && r.URL.Query().Get("list-type") == "" {
		n := f.gets.Add(1)
		if r.Header.Get("Range") != "" {
			f.ranged.Add(1)
		}
		if f.schedule != nil {
			mode = f.schedule(n)
		}
		if f.failAll.Load() {
			mode = "503"
		}
		if d := time.Duration(f.delay.Load()); d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
	}
	if mode == "503" {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `<?xml version="1.0"?><Error><Code>SlowDown</Code><Message>injected</Message></Error>`)
		return
	}
	out, err := http.NewRequestWithContext(r.Context(), r.Method, f.target.String()+r.URL.RequestURI(), r.Body)
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	out.Header = r.Header.Clone()
	out.ContentLength = r.ContentLength
	resp, err := http.DefaultTransport.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), 502)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	if mode == "truncate" {
		io.CopyN(w, resp.Body, 4096)
		panic(http.ErrAbortHandler) // cut the connection mid-body
	}
	io.Copy(w, resp.Body)
}

func (e *env) flaky(schedule func(int64) string) *flakyS3 {
	u, _ := url.Parse(e.s3.Endpoint)
	f := &flakyS3{target: u, schedule: schedule}
	srv := httptest.NewServer(f)
	e.t.Cleanup(srv.Close)
	e.s3Addr = srv.URL
	return f
}

func randomModel(t *testing.T, model string, v int64, n int) string {
	t.Helper()
	d := modelDir(t, model, v, 1)
	b := make([]byte, n)
	rand.New(rand.NewSource(v)).Read(b)
	if err := os.WriteFile(filepath.Join(d, "variables", "variables.data-00000"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestFlakyS3RetriesThenSucceeds(t *testing.T) {
	e := newEnv(t)
	f := e.flaky(func(n int64) string {
		switch n {
		case 1:
			return "503"
		case 2, 3:
			return "truncate"
		}
		return "pass"
	})
	f.delay.Store(int64(50 * time.Millisecond))
	cfg := e.config()
	sc := e.start(cfg, Deps{})
	d := randomModel(t, "big", 3, 1<<20)
	e.publish("big", 3, d, false)
	sc.wait(t, 1, outcome(journal.Published))
	sameTree(t, filepath.Join(e.base, "big", "3"), d)
	if f.ranged.Load() == 0 {
		t.Errorf("no Range request: the download restarted instead of resuming (%d GETs)", f.gets.Load())
	}
	e.queueEmpty()
}

func TestPersistentFailureGoesToDeadLetterQueue(t *testing.T) {
	e := newEnv(t)
	f := e.flaky(nil)
	f.failAll.Store(true)
	cfg := e.config()
	cfg.FetchAttempts = 2
	cfg.RetryDelay = 0
	// No SDK-level retries: the sidecar's own retries are what is under test.
	s3c := s3.NewFromConfig(testenv.AWSConfig(), func(o *s3.Options) {
		o.BaseEndpoint, o.UsePathStyle, o.RetryMaxAttempts = aws.String(e.s3Addr), true, 1
	})
	sc := e.start(cfg, Deps{S3: s3c})
	e.publish("m", 1, modelDir(t, "m", 1, 10), false)
	fails := sc.wait(t, 5, outcome(journal.Failed)) // the queue's maxReceiveCount
	if fails[4].Receives != 5 {
		t.Errorf("5th failure saw receive count %d", fails[4].Receives)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := e.sqs.Client.ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{QueueUrl: aws.String(e.queue.DLQURL), WaitTimeSeconds: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(out.Messages) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the failing notification never reached the dead-letter queue")
		}
	}
	assertNoTemp(t, e.base)
	if vs, _ := (&storeView{e.base}).versions("m"); len(vs) != 0 {
		t.Errorf("a failed download left versions %v", vs)
	}
}

type storeView struct{ base string }

func (s *storeView) versions(model string) ([]int64, error) {
	st, err := store.New(s.base, false)
	if err != nil {
		return nil, err
	}
	return st.Versions(model)
}

func TestCatchUp(t *testing.T) {
	e := newEnv(t)
	for _, mv := range []struct {
		m string
		v int64
	}{{"a", 1}, {"a", 2}, {"b", 5}, {"b", 10}, {"b", 9}} {
		if _, err := publish.Publish(context.Background(), e.s3.Client, nil, publish.PublishOptions{Bucket: e.bucket, Prefix: "models",
			Model: mv.m, Version: mv.v, Dir: modelDir(t, mv.m, mv.v, 10)}); err != nil {
			t.Fatal(err)
		}
	}
	e.putRaw("models/readme.txt", []byte("not a model"))
	cfg := e.config()
	cfg.CatchUp = true
	cfg.CatchUpInterval = 0
	cfg.QueueURL = "" // a sidecar that missed every notification
	sc := e.start(cfg, Deps{})
	got := sc.wait(t, 2, outcome(journal.Published))
	seen := map[string]bool{}
	for _, en := range got {
		seen[fmt.Sprintf("%s/%d", en.Model, en.Version)] = true
		if en.Trigger != "catchup" {
			t.Errorf("trigger %q, want catchup", en.Trigger)
		}
	}
	if !seen["a/2"] || !seen["b/10"] {
		t.Errorf("catch-up published %v, want a/2 and b/10", seen)
	}
}

// multiRecord joins single-record notifications into one message.
func multiRecord(bodies ...[]byte) string {
	var recs []json.RawMessage
	for _, b := range bodies {
		var n struct{ Records []json.RawMessage }
		json.Unmarshal(b, &n)
		recs = append(recs, n.Records...)
	}
	out, _ := json.Marshal(map[string]any{"Records": recs})
	return string(out)
}

func TestPerModelOrder(t *testing.T) {
	e := newEnv(t)
	var bodies [][]byte
	for _, v := range []int64{3, 1, 2} {
		p, err := publish.Publish(context.Background(), e.s3.Client, nil, publish.PublishOptions{Bucket: e.bucket, Prefix: "models",
			Model: "ord", Version: v, Dir: modelDir(t, "ord", v, 10)})
		if err != nil {
			t.Fatal(err)
		}
		bodies = append(bodies, event.NewCreated(e.bucket, p.Key, p.Size, p.ETag, time.Now()))
	}
	e.sqs.Send(t, e.queue.URL, multiRecord(bodies...))
	cfg := e.config()
	cfg.Retain = 2
	sc := e.start(cfg, Deps{})
	got := sc.wait(t, 3, outcome(journal.Published))
	var order []int64
	for _, en := range got {
		order = append(order, en.Version)
	}
	if !reflect.DeepEqual(order, []int64{1, 2, 3}) {
		t.Errorf("publish order %v, want [1 2 3]", order)
	}
	if vs, _ := (&storeView{e.base}).versions("ord"); !reflect.DeepEqual(vs, []int64{2, 3}) {
		t.Errorf("after retention (2): %v, want [2 3]", vs)
	}
	e.queueEmpty()
}

func TestRetentionKeepsPinned(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.Retain = 2
	cfg.Pinned = []string{"m/1"}
	cfg.PinnedFile = filepath.Join(t.TempDir(), "pins")
	os.WriteFile(cfg.PinnedFile, []byte("# pinned for the A/B test\nm/2\n"), 0o644)
	sc := e.start(cfg, Deps{})
	for v := int64(1); v <= 5; v++ {
		e.publish("m", v, modelDir(t, "m", v, 10), false)
		sc.wait(t, 1, outcome(journal.Published))
	}
	if vs, _ := (&storeView{e.base}).versions("m"); !reflect.DeepEqual(vs, []int64{1, 2, 4, 5}) {
		t.Errorf("versions %v, want [1 2 4 5] (newest 2 plus pinned 1 and 2)", vs)
	}
}

func TestGatewayModeExtractsOnlyAssets(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.Mode = ModeGateway
	sc := e.start(cfg, Deps{})
	e.publish("m", 4, modelDir(t, "m", 4, 1000), false)
	sc.wait(t, 1, outcome(journal.Published))
	var files []string
	for p := range tree(t, filepath.Join(e.base, "m", "4")) {
		files = append(files, p)
	}
	got := strings.Join(sortStrings(files), " ")
	if got != "assets.extra/servingsim.json assets/vocab.txt" {
		t.Errorf("gateway spec dir holds %q, want only assets and assets.extra", got)
	}
}

func sortStrings(s []string) []string {
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s
}

func TestShutdownAbandonsWithoutLosing(t *testing.T) {
	e := newEnv(t)
	f := e.flaky(nil)
	f.delay.Store(int64(time.Hour))
	cfg := e.config()
	cfg.ShutdownGrace = Duration(100 * time.Millisecond)
	sc := e.start(cfg, Deps{})
	e.publish("m", 1, modelDir(t, "m", 1, 10), false)
	testwait.Until(t, "the download to start (it then hangs)", func() bool { return f.gets.Load() > 0 })
	sc.stop(t)
	ab := sc.wait(t, 1, outcome(journal.Abandoned))
	t.Logf("abandoned: %s", ab[0].Reason)
	assertNoTemp(t, e.base)

	f.delay.Store(0)
	sc2 := e.start(e.config(), Deps{})
	sc2.wait(t, 1, outcome(journal.Published)) // redelivered at once, not after the visibility timeout
	e.queueEmpty()
}

var _ sync.Locker = (*sync.Mutex)(nil)

// TestHeartbeatKeepsLongWorkInvisible: a download slower than the visibility timeout is
// not redelivered to the other receiver meanwhile (which would show up as a duplicate).
func TestHeartbeatKeepsLongWorkInvisible(t *testing.T) {
	e := newEnv(t)
	f := e.flaky(nil)
	f.delay.Store(int64(9 * time.Second))
	cfg := e.config()
	cfg.VisibilityTimeout = Duration(4 * time.Second) // heartbeat every 1.3 s: slack for a loaded machine
	sc := e.start(cfg, Deps{})
	e.publish("slow", 1, modelDir(t, "slow", 1, 10), false)
	sc.wait(t, 1, outcome(journal.Published))
	f.delay.Store(0)
	e.queueEmpty()
	for _, en := range sc.snapshot() {
		if en.Outcome != journal.Published {
			t.Errorf("unexpected %s: %s (the message was redelivered while being worked on)", en.Outcome, en.Reason)
		}
	}
	if n := f.gets.Load(); n != 1 {
		t.Errorf("%d GETs; want 1", n)
	}
}
