package modelsync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/sync/errgroup"

	"github.com/tfgate/tfgate/modelsync/event"
	"github.com/tfgate/tfgate/modelsync/extract"
	"github.com/tfgate/tfgate/modelsync/journal"
	"github.com/tfgate/tfgate/modelsync/store"
)

// SQSAPI is the part of the SQS client the sidecar uses (same signatures as *sqs.Client).
type SQSAPI interface {
	ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, opts ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	DeleteMessage(ctx context.Context, in *sqs.DeleteMessageInput, opts ...func(*sqs.Options)) (*sqs.DeleteMessageOutput, error)
	ChangeMessageVisibility(ctx context.Context, in *sqs.ChangeMessageVisibilityInput, opts ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityOutput, error)
}

var _ SQSAPI = (*sqs.Client)(nil)

// Reloader adds a model to the local TF Serving's config (reload.Reloader).
type Reloader interface {
	Ensure(ctx context.Context, model string) (bool, error)
}

// Deps are Run's collaborators.
type Deps struct {
	// SQS receives notifications; required when Config.QueueURL is set.
	SQS SQSAPI
	// S3 reads objects; required.
	S3 S3API
	// Reloader, when set, adds new models to TF Serving (Config.TFServingAddr).
	Reloader Reloader
	// Logger; nil discards.
	Logger *slog.Logger
	// Meter; nil is a no-op provider.
	Meter metric.MeterProvider
	// TracerProvider; nil is a no-op. Each notification gets a trace:
	// modelsync.receive, then per version modelsync.sync with children
	// modelsync.fetch_extract (download, verify, extract: one stream),
	// modelsync.publish, modelsync.retention and modelsync.reload.
	TracerProvider trace.TracerProvider
	// OnOutcome, when set, sees every journal entry (tests, benchmarks).
	OnOutcome func(journal.Entry)
}

type job struct {
	model   string
	version int64
	bucket  string
	key     string
	etag    string // from the notification, "" when unknown
	trigger string
	msg     *message // nil for catch-up
	queued  time.Time
	// eventTime is the S3 event's time (zero for catch-up): freshness is
	// measured from it to publication.
	eventTime time.Time
	// parent is the modelsync.receive span of the notification.
	parent trace.SpanContext
	// fallback, for catch-up, holds the model's older candidates to try when this
	// version's archive is rejected, so a hostile newest version does not leave the
	// model without any.
	fallback *fallbacks
	// note is journaled as the reason of a successful outcome (why this version).
	note string
}

type message struct {
	id       string
	receipt  string
	receives int
	mu       sync.Mutex
	pending  int
	retry    bool
	abandon  bool
}

type modelQueue struct {
	jobs    []job
	running bool
}

type syncer struct {
	cfg     Config
	deps    Deps
	log     *slog.Logger
	layout  *Layout
	store   *store.Store
	journal *journal.Journal
	gzip    extract.Decompressor
	bo      backoff

	slots   chan struct{} // MaxInFlight
	workers chan struct{} // Concurrency
	workCtx context.Context

	mu     sync.Mutex
	models map[string]*modelQueue
	jobs   sync.WaitGroup

	msgMu sync.Mutex
	msgs  map[*message]struct{}

	rejected *rejectedSet

	outcomes metric.Int64Counter
	duration metric.Float64Histogram
	bytes    metric.Int64Counter

	tracer    trace.Tracer
	phases    metric.Float64Histogram
	freshness metric.Float64Histogram
	sqsLagMS  atomic.Int64 // age of the oldest message in the last non-empty receive
	lagReg    metric.Registration
}

// Run syncs until ctx ends, then lets in-flight work finish for up to ShutdownGrace,
// abandons the rest (its messages become visible again), and returns. With no QueueURL
// and CatchUpInterval 0 it is a one-shot sync (an init container): it returns once the
// startup catch-up's versions are published. It returns an error only for
// configuration or startup problems.
func Run(ctx context.Context, cfg Config, deps Deps) error {
	s, err := newSyncer(cfg, deps)
	if err != nil {
		return err
	}
	defer s.journal.Close()
	if s.lagReg != nil {
		defer s.lagReg.Unregister()
	}
	cfg = s.cfg

	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	s.workCtx = workCtx

	hbCtx, stopHB := context.WithCancel(context.WithoutCancel(ctx))
	hbDone := make(chan struct{})
	go func() { defer close(hbDone); s.heartbeat(hbCtx) }()

	s.log.Info("modelsync started", "mode", cfg.Mode, "base_path", s.store.Base(), "queue_url", cfg.QueueURL,
		"bucket", cfg.Bucket, "concurrency", cfg.Concurrency, "catch_up", cfg.CatchUp)
	g, gctx := errgroup.WithContext(ctx)
	if cfg.QueueURL != "" {
		for range cfg.Receivers {
			g.Go(func() error { s.receive(gctx); return nil })
		}
	}
	if cfg.CatchUp {
		g.Go(func() error { s.catchUpLoop(gctx); return nil })
	}
	_ = g.Wait()

	// No new work is taken now. Either ctx ended (shutdown: in-flight work gets
	// ShutdownGrace to finish), or there is no queue and the single catch-up pass is over
	// (a one-shot sync: its jobs run to the end unless ctx ends meanwhile).
	done := make(chan struct{})
	go func() { s.jobs.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	grace := time.NewTimer(time.Duration(cfg.ShutdownGrace))
	select {
	case <-done:
	case <-grace.C:
		s.log.Warn("shutdown grace over; abandoning in-flight work", "grace", time.Duration(cfg.ShutdownGrace))
		cancelWork()
		<-done
	}
	grace.Stop()
	stopHB()
	<-hbDone
	return nil
}

func newSyncer(cfg Config, deps Deps) (*syncer, error) {
	cfg = cfg.withDerived()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid modelsync config: %w", err)
	}
	if deps.S3 == nil {
		return nil, errors.New("modelsync: Deps.S3 is required")
	}
	if cfg.QueueURL != "" && deps.SQS == nil {
		return nil, errors.New("modelsync: Deps.SQS is required with a queue_url")
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mp := deps.Meter
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	layout, err := NewLayout(cfg.Prefix, cfg.Layouts)
	if err != nil {
		return nil, err
	}
	st, err := store.New(cfg.BasePath, !cfg.NoFsync)
	if err != nil {
		return nil, err
	}
	removed, err := st.CleanStale()
	for _, p := range removed {
		log.Info("removed stale temporary directory", "path", p)
	}
	if err != nil {
		return nil, fmt.Errorf("clean stale temporary directories: %w", err)
	}
	jr, err := journal.Open(cfg.StateDir, journal.Options{MaxBytes: cfg.JournalMaxBytes, MaxFiles: cfg.JournalFiles})
	if err != nil {
		return nil, err
	}
	gz := extract.KlauspostGzip
	if cfg.Gzip == "std" {
		gz = extract.StdGzip
	}
	m := mp.Meter("github.com/tfgate/tfgate/modelsync")
	s := &syncer{
		cfg: cfg, deps: deps, log: log, layout: layout, store: st, journal: jr, gzip: gz,
		bo:       expBackoff(time.Duration(cfg.FetchBackoff), time.Duration(cfg.FetchBackoffMax)),
		slots:    make(chan struct{}, cfg.MaxInFlight),
		workers:  make(chan struct{}, cfg.Concurrency),
		models:   map[string]*modelQueue{},
		msgs:     map[*message]struct{}{},
		rejected: newRejectedSet(cfg.RememberRejected),
		workCtx:  context.Background(),
	}
	s.outcomes, _ = m.Int64Counter("modelsync.sync.outcomes", metric.WithDescription("Sync attempts by outcome."))
	s.duration, _ = m.Float64Histogram("modelsync.sync.duration", metric.WithUnit("s"), metric.WithDescription("Time from dequeue to outcome."))
	s.bytes, _ = m.Int64Counter("modelsync.fetch.bytes", metric.WithUnit("By"), metric.WithDescription("Archive bytes downloaded."))
	s.phases, _ = m.Float64Histogram("modelsync.sync.phase.duration", metric.WithUnit("s"),
		metric.WithDescription("Time spent in each sync phase (queued, fetch_extract, commit, retention, reload, total) by outcome."))
	s.freshness, _ = m.Float64Histogram("modelsync.freshness", metric.WithUnit("s"),
		metric.WithDescription("Seconds from the S3 event time to the version being published (SQS-triggered syncs)."),
		metric.WithExplicitBucketBoundaries(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600))
	lag, _ := m.Float64ObservableGauge("modelsync.sqs.lag", metric.WithUnit("s"),
		metric.WithDescription("Age of the oldest message in the last non-empty SQS receive (0 after an empty one)."))
	if lag != nil && cfg.QueueURL != "" {
		s.lagReg, _ = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
			o.ObserveFloat64(lag, float64(s.sqsLagMS.Load())/1000)
			return nil
		}, lag)
	}
	tp := deps.TracerProvider
	if tp == nil {
		tp = tracenoop.NewTracerProvider()
	}
	s.tracer = tp.Tracer("github.com/tfgate/tfgate/modelsync")
	return s, nil
}

// record journals and reports an entry, its outside input bounded (journal.Entry.Bounded)
// in the log line as in the journal.
func (s *syncer) record(e journal.Entry) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	e = e.Bounded()
	if err := s.journal.Append(e); err != nil {
		s.log.Error("journal append failed", "err", err)
	}
	s.outcomes.Add(context.Background(), 1, metric.WithAttributes(attribute.String("outcome", e.Outcome)))
	for phase, v := range e.PhasesMS {
		s.phases.Record(context.Background(), v/1000, metric.WithAttributes(attribute.String("phase", phase), attribute.String("outcome", e.Outcome)))
	}
	lvl := slog.LevelInfo
	switch e.Outcome {
	case journal.Failed, journal.Rejected, journal.Conflict:
		lvl = slog.LevelWarn
	}
	s.log.Log(context.Background(), lvl, "sync "+e.Outcome, "model", e.Model, "version", e.Version,
		"key", e.Key, "trigger", e.Trigger, "reason", e.Reason, "bytes", e.Bytes, "total_ms", e.PhasesMS["total"])
	if s.deps.OnOutcome != nil {
		s.deps.OnOutcome(e)
	}
}

// settleCtx is for the calls that settle a message: they must happen even when
// shutdown has begun.
func settleCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}

// receive is one long-poll loop.
func (s *syncer) receive(ctx context.Context) {
	fail := 0
	for {
		// Hold a slot per message we may receive: at least one, up to ten.
		select {
		case s.slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		n := 1
		for n < 10 {
			select {
			case s.slots <- struct{}{}:
				n++
				continue
			default:
			}
			break
		}
		// The poll itself is not cancelled at shutdown: SQS may already have handed
		// messages to it, and a dropped connection would leave them invisible for the
		// whole visibility timeout. It ends within ReceiveWait; what it brings after
		// shutdown began is released at once.
		out, err := s.deps.SQS.ReceiveMessage(context.WithoutCancel(ctx), &sqs.ReceiveMessageInput{
			QueueUrl:                    aws.String(s.cfg.QueueURL),
			MaxNumberOfMessages:         int32(n),
			WaitTimeSeconds:             int32(time.Duration(s.cfg.ReceiveWait) / time.Second),
			VisibilityTimeout:           int32(time.Duration(s.cfg.VisibilityTimeout) / time.Second),
			MessageSystemAttributeNames: []sqstypes.MessageSystemAttributeName{sqstypes.MessageSystemAttributeNameApproximateReceiveCount, sqstypes.MessageSystemAttributeNameSentTimestamp},
		})
		got := 0
		if out != nil {
			got = len(out.Messages)
		}
		for i := got; i < n; i++ {
			<-s.slots
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			fail++
			d := s.bo(fail)
			s.log.Warn("SQS receive failed; retrying", "queue", s.cfg.QueueURL, "delay", d, "err", err)
			if sleepCtx(ctx, d) != nil {
				return
			}
			continue
		}
		fail = 0
		s.observeLag(out.Messages)
		if ctx.Err() != nil {
			for _, m := range out.Messages {
				s.release(m)
			}
			return
		}
		for _, m := range out.Messages {
			s.handle(m)
		}
	}
}

// observeLag keeps the age of the oldest message just received (SentTimestamp).
func (s *syncer) observeLag(msgs []sqstypes.Message) {
	var oldest int64
	now := time.Now().UnixMilli()
	for _, m := range msgs {
		if sent, err := strconv.ParseInt(m.Attributes[string(sqstypes.MessageSystemAttributeNameSentTimestamp)], 10, 64); err == nil && now-sent > oldest {
			oldest = now - sent
		}
	}
	s.sqsLagMS.Store(oldest)
}

// handle turns one message into jobs, or settles it at once.
func (s *syncer) handle(m sqstypes.Message) {
	_, span := s.tracer.Start(context.Background(), "modelsync.receive", trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("messaging.system", "aws_sqs"), attribute.String("messaging.message.id", aws.ToString(m.MessageId))))
	defer span.End()
	msg := &message{id: aws.ToString(m.MessageId), receipt: aws.ToString(m.ReceiptHandle)}
	msg.receives, _ = strconv.Atoi(m.Attributes[string(sqstypes.MessageSystemAttributeNameApproximateReceiveCount)])
	base := journal.Entry{Trigger: "sqs", MessageID: msg.id, Receives: msg.receives}
	parsed, err := event.ParseLimited([]byte(aws.ToString(m.Body)), s.cfg.MaxMessageBytes, s.cfg.MaxRecordsPerMessage)
	if err != nil {
		span.SetStatus(otelcodes.Error, err.Error())
		e := base
		e.Outcome, e.Reason = journal.Rejected, err.Error()
		s.record(e)
		s.settle(msg)
		return
	}
	if parsed.Test {
		s.log.Info("s3:TestEvent acknowledged", "message_id", msg.id)
		s.settle(msg)
		return
	}
	if len(parsed.Rejected) > 0 || parsed.Unread > 0 {
		// Records that name nothing get one summary, however many there are.
		e := base
		e.Outcome, e.Reason = journal.Rejected, rejectedSummary(parsed, s.cfg.MaxRecordsPerMessage)
		s.record(e)
	}
	var jobs []job
	for _, r := range parsed.Records {
		e := base
		e.Bucket, e.Key = r.Bucket, r.Key
		if r.Kind != event.Created {
			e.Outcome, e.Reason = journal.Ignored, "event "+r.EventName+" does not publish a model"
			s.record(e)
			continue
		}
		if s.cfg.Bucket != "" && r.Bucket != s.cfg.Bucket {
			e.Outcome, e.Reason = journal.Ignored, fmt.Sprintf("bucket %q is not the configured %q", r.Bucket, s.cfg.Bucket)
			s.record(e)
			continue
		}
		model, v, err := s.layout.Parse(r.Key)
		if err != nil {
			e.Outcome, e.Reason = journal.Rejected, err.Error()
			s.record(e)
			continue
		}
		if why, ok := s.rejected.get(r.Key, r.ETag); ok {
			e.Model, e.Version = model, v
			e.Outcome, e.Reason = journal.Rejected, "rejected before (same ETag "+r.ETag+"), not fetched again: "+why
			s.record(e)
			continue
		}
		jobs = append(jobs, job{model: model, version: v, bucket: r.Bucket, key: r.Key, etag: r.ETag,
			trigger: "sqs", msg: msg, queued: time.Now(), eventTime: r.Time, parent: span.SpanContext()})
	}
	if len(jobs) == 0 {
		s.settle(msg)
		return
	}
	// Lower versions first, so one message naming several versions of a model publishes
	// them in order.
	sort.Slice(jobs, func(a, b int) bool { return jobs[a].version < jobs[b].version })
	msg.pending = len(jobs)
	s.msgMu.Lock()
	s.msgs[msg] = struct{}{}
	s.msgMu.Unlock()
	for _, j := range jobs {
		s.submit(j)
	}
}

// settle deletes a finished message, or makes a failed one visible again, and frees its slot.
func (s *syncer) settle(msg *message) {
	defer func() { <-s.slots }()
	s.msgMu.Lock()
	delete(s.msgs, msg)
	s.msgMu.Unlock()
	ctx, cancel := settleCtx()
	defer cancel()
	if msg.retry {
		vis := time.Duration(s.cfg.RetryDelay)
		if msg.abandon {
			vis = 0
		}
		if _, err := s.deps.SQS.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{
			QueueUrl: aws.String(s.cfg.QueueURL), ReceiptHandle: aws.String(msg.receipt), VisibilityTimeout: int32(vis / time.Second),
		}); err != nil {
			s.log.Warn("could not shorten visibility of a failed message; it returns after its visibility timeout", "message_id", msg.id, "err", err)
		}
		return
	}
	if _, err := s.deps.SQS.DeleteMessage(ctx, &sqs.DeleteMessageInput{
		QueueUrl: aws.String(s.cfg.QueueURL), ReceiptHandle: aws.String(msg.receipt),
	}); err != nil {
		// The work is done; a redelivery will find it published (a duplicate).
		s.log.Warn("delete message failed; it will be redelivered and found already published", "message_id", msg.id, "err", err)
	}
}

// release makes a message received during shutdown visible again at once.
func (s *syncer) release(m sqstypes.Message) {
	defer func() { <-s.slots }()
	ctx, cancel := settleCtx()
	defer cancel()
	if _, err := s.deps.SQS.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{
		QueueUrl: aws.String(s.cfg.QueueURL), ReceiptHandle: m.ReceiptHandle, VisibilityTimeout: 0,
	}); err != nil {
		s.log.Warn("could not release a message received during shutdown; it returns after its visibility timeout",
			"message_id", aws.ToString(m.MessageId), "err", err)
	}
}

// heartbeat keeps in-flight messages invisible while they are being worked on.
func (s *syncer) heartbeat(ctx context.Context) {
	if s.cfg.QueueURL == "" {
		return
	}
	every := time.Duration(s.cfg.VisibilityTimeout) / 3
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.msgMu.Lock()
		var live []*message
		for m := range s.msgs {
			live = append(live, m)
		}
		s.msgMu.Unlock()
		for _, m := range live {
			cctx, cancel := context.WithTimeout(ctx, every)
			_, err := s.deps.SQS.ChangeMessageVisibility(cctx, &sqs.ChangeMessageVisibilityInput{
				QueueUrl: aws.String(s.cfg.QueueURL), ReceiptHandle: aws.String(m.receipt),
				VisibilityTimeout: int32(time.Duration(s.cfg.VisibilityTimeout) / time.Second),
			})
			cancel()
			if err != nil && ctx.Err() == nil {
				s.log.Warn("visibility heartbeat failed", "message_id", m.id, "err", err)
			}
		}
	}
}

// submit queues a job on its model; the model's goroutine runs its jobs in version order.
func (s *syncer) submit(j job) {
	s.jobs.Add(1)
	s.mu.Lock()
	q := s.models[j.model]
	if q == nil {
		q = &modelQueue{}
		s.models[j.model] = q
	}
	q.jobs = append(q.jobs, j)
	start := !q.running
	q.running = true
	s.mu.Unlock()
	if start {
		go s.runModel(j.model, q)
	}
}

func (s *syncer) runModel(model string, q *modelQueue) {
	for {
		s.mu.Lock()
		if len(q.jobs) == 0 {
			q.running = false
			delete(s.models, model)
			s.mu.Unlock()
			return
		}
		i := 0
		for k := range q.jobs {
			if q.jobs[k].version < q.jobs[i].version {
				i = k
			}
		}
		j := q.jobs[i]
		q.jobs = append(q.jobs[:i], q.jobs[i+1:]...)
		s.mu.Unlock()

		var e journal.Entry
		select {
		case s.workers <- struct{}{}:
			e = s.process(j)
			<-s.workers
		case <-s.workCtx.Done():
			e = s.entry(j)
			e.Outcome, e.Reason = journal.Abandoned, "shutdown before the work started"
		}
		if j.note != "" && e.Reason == "" && (e.Outcome == journal.Published || e.Outcome == journal.Duplicate) {
			e.Reason = j.note
		}
		s.record(e)
		if next, ok := s.fallback(j, e); ok {
			s.submit(next) // takes over j's slot
			s.jobs.Done()
			continue
		}
		s.done(j, e.Outcome)
	}
}

// done accounts for a finished job.
func (s *syncer) done(j job, outcome string) {
	defer s.jobs.Done()
	if j.msg == nil {
		<-s.slots
		return
	}
	m := j.msg
	m.mu.Lock()
	m.pending--
	switch outcome {
	case journal.Failed:
		m.retry = true
	case journal.Abandoned:
		m.retry, m.abandon = true, true
	}
	last := m.pending == 0
	m.mu.Unlock()
	if last {
		s.settle(m)
	}
}

func (s *syncer) entry(j job) journal.Entry {
	e := journal.Entry{Time: time.Now(), Model: j.model, Version: j.version, Bucket: j.bucket, Key: j.key,
		Trigger: j.trigger, PhasesMS: map[string]float64{}}
	if j.msg != nil {
		e.MessageID, e.Receives = j.msg.id, j.msg.receives
	}
	return e
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// process fetches, extracts and publishes one version.
func (s *syncer) process(j job) (e journal.Entry) {
	ctx := s.workCtx
	start := time.Now()
	e = s.entry(j)
	e.PhasesMS["queued"] = ms(start.Sub(j.queued))
	ctx, span := s.tracer.Start(trace.ContextWithSpanContext(ctx, j.parent), "modelsync.sync", trace.WithAttributes(
		attribute.String("tfgate.model", j.model), attribute.Int64("tfgate.version", j.version),
		attribute.String("s3.key", j.key), attribute.String("modelsync.trigger", j.trigger)))
	defer func() {
		total := time.Since(start)
		e.PhasesMS["total"] = ms(total)
		s.duration.Record(context.Background(), total.Seconds(), metric.WithAttributes(attribute.String("outcome", e.Outcome)))
		if e.Outcome == journal.Published && !j.eventTime.IsZero() {
			s.freshness.Record(context.Background(), time.Since(j.eventTime).Seconds())
		}
		span.SetAttributes(attribute.String("modelsync.outcome", e.Outcome), attribute.Int64("modelsync.bytes", e.Bytes))
		if e.Reason != "" && e.Outcome != journal.Published && e.Outcome != journal.Duplicate {
			span.SetStatus(otelcodes.Error, e.Reason)
		}
		span.End()
	}()
	phase := func(name string) trace.Span {
		_, sp := s.tracer.Start(ctx, name)
		return sp
	}
	fail := func(outcome string, err error) journal.Entry {
		e.Outcome, e.Reason = outcome, err.Error()
		return e
	}

	ok, src, err := s.store.Lookup(j.model, j.version)
	if err != nil {
		return fail(journal.Failed, fmt.Errorf("look up local version: %w", err))
	}
	if ok {
		return s.existing(ctx, j, src, e, "")
	}

	t := time.Now()
	fx := phase("modelsync.fetch_extract")
	p, err := s.store.Begin(j.model, j.version)
	if err != nil {
		fx.End()
		return fail(journal.Failed, err)
	}
	r := newObjectReader(ctx, s.deps.S3, j.bucket, j.key, s.cfg.FetchAttempts, s.bo, s.cfg.MaxObjectBytes, s.log)
	st, xerr := extract.Extract(ctx, r, p.Dir(), extract.Options{
		Limits: s.cfg.Limits, Root: strconv.FormatInt(j.version, 10), Include: s.cfg.Include,
		Gzip: s.gzip, Sync: !s.cfg.NoFsync,
	})
	sum, ferr := "", error(nil)
	if xerr == nil || (errors.Is(xerr, extract.ErrCorrupt) && r.off > 0 && !isFetchError(xerr) && ctx.Err() == nil) {
		// On success, verify; on a corrupt archive, read the rest to tell a bad object
		// (rejected) from bytes damaged on the way (retried).
		sum, ferr = r.finish()
	}
	r.Close()
	e.Bytes, e.Extracted = r.off, st.Bytes
	s.bytes.Add(context.Background(), r.off)
	e.PhasesMS["fetch_extract"] = ms(time.Since(t))
	fx.SetAttributes(attribute.Int64("modelsync.bytes", r.off), attribute.Int64("modelsync.extracted_bytes", st.Bytes))
	fx.End()
	if err := errors.Join(xerr, ferr); err != nil {
		p.Abort()
		if r.err != nil && ferr == nil {
			// The archive looked broken only because reading the object failed.
			err = r.err
		}
		out := s.classify(ctx, xerr, ferr)
		if out == journal.Abandoned {
			err = fmt.Errorf("shutdown interrupted the download: %w", err)
		}
		if out == journal.Rejected && !errors.Is(err, ErrObjectGone) {
			etag := j.etag
			if etag == "" {
				etag = r.info.ETag
			}
			s.rejected.add(j.key, etag, err.Error())
		}
		return fail(out, err)
	}

	t = time.Now()
	pub := phase("modelsync.publish")
	err = p.Commit(store.Source{Bucket: j.bucket, Key: j.key, SHA256: sum, ETag: r.info.ETag, Size: r.info.Size, PublishedAt: time.Now().UTC()})
	e.PhasesMS["commit"] = ms(time.Since(t))
	pub.End()
	if errors.Is(err, store.ErrExists) {
		_, src, _ := s.store.Lookup(j.model, j.version)
		return s.existing(ctx, j, src, e, sum)
	}
	if err != nil {
		return fail(journal.Failed, fmt.Errorf("publish: %w", err))
	}

	t = time.Now()
	ret := phase("modelsync.retention")
	if removed, err := s.store.Retain(j.model, s.cfg.Retain, s.pinned()); err != nil {
		s.log.Warn("retention failed", "model", j.model, "err", err)
	} else if len(removed) > 0 {
		s.log.Info("retention removed versions", "model", j.model, "versions", removed)
	}
	e.PhasesMS["retention"] = ms(time.Since(t))
	ret.End()

	rl := phase("modelsync.reload")
	err = s.ensureServed(ctx, j.model, e.PhasesMS)
	rl.End()
	if err != nil {
		// Published but not yet in TF Serving's config: retry; the redelivery finds the
		// version published and retries the reload.
		return fail(journal.Failed, err)
	}
	e.Outcome = journal.Published
	return e
}

func (s *syncer) ensureServed(ctx context.Context, model string, phases map[string]float64) error {
	if s.deps.Reloader == nil {
		return nil
	}
	t := time.Now()
	rctx, cancel := context.WithTimeout(ctx, time.Duration(s.cfg.ReloadTimeout))
	defer cancel()
	reloaded, err := s.deps.Reloader.Ensure(rctx, model)
	if reloaded || err != nil {
		phases["reload"] = ms(time.Since(t))
	}
	if err != nil {
		return fmt.Errorf("published, but adding the model to TF Serving failed: %w", err)
	}
	return nil
}

// existing decides what a notification for an already published version means.
// knownSHA is the SHA-256 just computed, when the object was downloaded.
func (s *syncer) existing(ctx context.Context, j job, src *store.Source, e journal.Entry, knownSHA string) journal.Entry {
	same, reason := true, "already published (no source marker: published by something else)"
	if src != nil {
		switch {
		case knownSHA != "" && src.SHA256 != "":
			same = knownSHA == src.SHA256
			reason = "SHA-256 " + knownSHA + " vs published " + src.SHA256
		case j.etag != "" && src.ETag == j.etag:
			same, reason = true, "same ETag "+j.etag
		default:
			info, err := head(ctx, s.deps.S3, j.bucket, j.key)
			switch {
			case errors.Is(err, ErrObjectGone):
				same, reason = true, "already published; the object is gone"
			case err != nil:
				e.Outcome, e.Reason = journal.Failed, "already published; checking the object failed: "+err.Error()
				return e
			case info.SHA256 != "" && src.SHA256 != "":
				same = info.SHA256 == src.SHA256
				reason = "SHA-256 " + info.SHA256 + " vs published " + src.SHA256
			case info.ETag != "" && src.ETag != "":
				same = info.ETag == src.ETag && info.Size == src.Size
				reason = fmt.Sprintf("ETag %s (%d bytes) vs published %s (%d bytes)", info.ETag, info.Size, src.ETag, src.Size)
			default:
				same = info.Size == src.Size
				reason = fmt.Sprintf("size %d vs published %d", info.Size, src.Size)
			}
		}
	}
	if !same {
		e.Outcome = journal.Conflict
		e.Reason = "version already published from a different object; left untouched: " + reason
		return e
	}
	if err := s.ensureServed(ctx, j.model, e.PhasesMS); err != nil {
		e.Outcome, e.Reason = journal.Failed, err.Error()
		return e
	}
	e.Outcome, e.Reason = journal.Duplicate, reason
	return e
}

// rejectedSummary is one journal reason for every record of a message that could not
// be read: the first few errors, and how many more.
func rejectedSummary(m event.Message, maxRecords int) string {
	var b strings.Builder
	if n := len(m.Rejected); n > 0 {
		fmt.Fprintf(&b, "%d unusable record(s)", n)
		for i, re := range m.Rejected {
			if i == 3 {
				fmt.Fprintf(&b, "; and %d more", n-3)
				break
			}
			b.WriteString("; ")
			b.WriteString(journal.Truncate(re.Error(), 200))
		}
	}
	if m.Unread > 0 {
		if b.Len() > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%d record(s) past the limit of %d per message not read (max_records_per_message)", m.Unread, maxRecords)
	}
	return b.String()
}

func isFetchError(err error) bool {
	return errors.Is(err, ErrObjectGone) || errors.Is(err, ErrObjectChanged) || errors.Is(err, ErrTooBig) ||
		errors.Is(err, ErrIntegrity) || errors.Is(err, ErrFetchFailed)
}

// classify maps a fetch/extract failure to an outcome.
func (s *syncer) classify(ctx context.Context, xerr, ferr error) string {
	err := errors.Join(xerr, ferr)
	switch {
	case ctx.Err() != nil:
		return journal.Abandoned
	case errors.Is(err, ErrObjectGone), errors.Is(err, ErrTooBig):
		return journal.Rejected
	case errors.Is(err, ErrIntegrity), errors.Is(err, ErrObjectChanged), errors.Is(err, ErrFetchFailed):
		return journal.Failed
	case errors.Is(xerr, extract.ErrUnsafe), errors.Is(xerr, extract.ErrLimit),
		errors.Is(xerr, extract.ErrEmpty), errors.Is(xerr, extract.ErrCorrupt),
		errors.Is(xerr, extract.ErrRefused):
		return journal.Rejected
	}
	return journal.Failed
}

// pinned returns the retention guard: Config.Pinned plus PinnedFile, read now.
func (s *syncer) pinned() func(string, int64) bool {
	pins, _ := parsePins(s.cfg.Pinned)
	if s.cfg.PinnedFile != "" {
		b, err := os.ReadFile(s.cfg.PinnedFile)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("cannot read pinned file; retention skipped", "file", s.cfg.PinnedFile, "err", err)
			return func(string, int64) bool { return true }
		}
		more, perr := parsePins(splitLines(string(b)))
		if perr != nil {
			s.log.Warn("pinned file has bad lines; retention skipped", "file", s.cfg.PinnedFile, "err", perr)
			return func(string, int64) bool { return true }
		}
		for p := range more {
			pins[p] = true
		}
	}
	return func(m string, v int64) bool { return pins[pin{m, v}] }
}

func splitLines(s string) []string {
	var out []string
	for len(s) > 0 {
		i := 0
		for i < len(s) && s[i] != '\n' {
			i++
		}
		out = append(out, s[:i])
		if i < len(s) {
			i++
		}
		s = s[i:]
	}
	return out
}
