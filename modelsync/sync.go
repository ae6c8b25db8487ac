package modelsync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/sync/errgroup"

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
	// Placement is placement mode's (Config.Placement.Enabled): NewPlacementDeps.
	Placement PlacementDeps
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
	place    *placer // placement mode; nil otherwise

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
	if s.place != nil {
		defer s.place.metrics.close()
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
	if s.place != nil {
		g.Go(func() error { s.place.run(gctx); return nil })
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

// syncBuckets (seconds) span one sync and its phases, from a small version's
// commit (milliseconds) to a 1.2 GB archive's download and extraction (minutes);
// OpenTelemetry's default boundaries are for milliseconds.
var syncBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}

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
	gz, err := extract.DecompressorByName(cfg.Gzip)
	if err != nil {
		return nil, err
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
	s.duration, _ = m.Float64Histogram("modelsync.sync.duration", metric.WithUnit("s"), metric.WithDescription("Time from dequeue to outcome."),
		metric.WithExplicitBucketBoundaries(syncBuckets...))
	s.bytes, _ = m.Int64Counter("modelsync.fetch.bytes", metric.WithUnit("By"), metric.WithDescription("Archive bytes downloaded."))
	s.phases, _ = m.Float64Histogram("modelsync.sync.phase.duration", metric.WithUnit("s"),
		metric.WithDescription("Time spent in each sync phase (queued, fetch_extract, commit, retention, reload, total) by outcome."),
		metric.WithExplicitBucketBoundaries(syncBuckets...))
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
	if cfg.Placement.Enabled {
		// The model config follows the assignment; the add-only reloader would load
		// every version on disk.
		s.deps.Reloader = nil
		if s.place, err = newPlacer(s, deps.Placement, m); err != nil {
			jr.Close()
			return nil, err
		}
	}
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
	if s.place != nil {
		s.place.observe(e)
	}
	if s.deps.OnOutcome != nil {
		s.deps.OnOutcome(e)
	}
}
