package exposure

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"gopkg.in/natefinch/lumberjack.v2"
)

// Defaults for [Config].
const (
	// DefaultMaxSizeMB is the size at which the log file is rotated, MiB.
	DefaultMaxSizeMB = 100
	// DefaultMaxBackups is how many rotated files are kept.
	DefaultMaxBackups = 10
	// DefaultBuffer is how many records may wait for the writer.
	DefaultBuffer = 16384
	// DefaultDropLogInterval is the least time between two log lines about drops.
	DefaultDropLogInterval = 10 * time.Second
	// DefaultFlushInterval bounds how long an accepted record waits in memory.
	DefaultFlushInterval = time.Second

	// batchBytes is the size at which the writer writes its batch out even
	// while records keep coming.
	batchBytes = 64 << 10
	// hashBytes is how much of the HMAC a hashed key keeps (128 bits).
	hashBytes = 16
)

// Stdout is the [Config.Path] that writes the log to standard output.
const Stdout = "-"

// ErrConfig is wrapped by every configuration error of [New].
var ErrConfig = errors.New("exposure log")

// Config is the exposure log's configuration (cmd/gateway's --exposure-* flags).
type Config struct {
	// Path is the file records are appended to, or "-" for standard output.
	// Default: empty, no exposure log.
	Path string
	// MaxSizeMB rotates the file when a write would take it past this many MiB.
	// Default 100. Not used for stdout.
	MaxSizeMB int
	// MaxBackups is how many rotated files are kept. Default 10.
	MaxBackups int
	// MaxAgeDays removes rotated files older than this. Default 0: no age limit.
	MaxAgeDays int
	// Compress gzips rotated files. Default false.
	Compress bool
	// HashKeys writes a keyed hash of each routing key (key_hash) instead of the
	// key itself (key). Default false.
	HashKeys bool
	// HashSecret is the HMAC key of HashKeys; required with it. Gateways that
	// share it write the same hash for the same key.
	HashSecret []byte
	// Buffer is how many records may wait for the writer; beyond it records are
	// dropped. Default 16384.
	Buffer int
	// DropLogInterval is the least time between two log lines about drops.
	// Default 10s.
	DropLogInterval time.Duration
	// FlushInterval bounds how long an accepted record may wait in memory before
	// it is written. Default 1s.
	FlushInterval time.Duration
}

// Options are [New]'s injected dependencies; all optional.
type Options struct {
	// Logger reports drops and write errors; nil discards.
	Logger *slog.Logger
	// MeterProvider; nil is a no-op.
	MeterProvider metric.MeterProvider
	// Output, when set, receives the records instead of Config.Path (tests).
	Output io.Writer
}

// Record is one exposure: a Predict that resolved a version.
type Record struct {
	// Time is when the request arrived.
	Time time.Time
	// RequestID is the request's x-request-id (package telemetry), if any.
	RequestID string
	// TraceID is the request's trace, if it was traced.
	TraceID trace.TraceID
	// Model, Experiment, Arm and Version are what the request was routed to
	// (Experiment and Arm only for an experiment route).
	Model, Experiment, Arm string
	Version                int64
	// Ensemble is set when the call was an ensemble's member call: the
	// ensemble's name (then there is one record per member).
	Ensemble string
	// Route is how the version was chosen: version, label, experiment or default.
	Route string
	// Label is the label resolved (label and default-label routes).
	Label string
	// Key is the caller's routing key ("" for none); written hashed with HashKeys.
	Key string
	// Code is the gRPC code the caller got.
	Code codes.Code
	// Latency is the server-side time from arrival to answer.
	Latency time.Duration
}

// Sink receives exposure records. Expose must not block.
type Sink interface {
	Expose(Record)
}

// Tee returns a Sink that hands every record to each non-nil sink in turn
// (nil when there is none).
func Tee(sinks ...Sink) Sink {
	var out tee
	for _, s := range sinks {
		if s != nil {
			out = append(out, s)
		}
	}
	switch len(out) {
	case 0:
		return nil
	case 1:
		return out[0]
	}
	return out
}

type tee []Sink

func (t tee) Expose(r Record) {
	for _, s := range t {
		s.Expose(r)
	}
}

// Log is the bounded asynchronous exposure writer. See the package doc.
type Log struct {
	cfg     Config
	log     *slog.Logger
	out     io.Writer
	closer  io.Closer // nil for stdout and Options.Output
	mac     hash.Hash // writer goroutine only
	queue   chan Record
	closing atomic.Bool
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
	reg     metric.Registration

	written, full, writeErrs, closed atomic.Uint64
}

var _ Sink = (*Log)(nil)

// New checks cfg, opens the output (failing if it cannot be written) and
// starts the writer goroutine. Close it at shutdown.
func New(cfg Config, opts Options) (*Log, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	l := &Log{
		cfg:   cfg,
		log:   opts.Logger,
		queue: make(chan Record, cfg.Buffer),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	if cfg.HashKeys {
		l.mac = hmac.New(sha256.New, cfg.HashSecret)
	}
	switch {
	case opts.Output != nil:
		l.out = opts.Output
	case cfg.Path == Stdout:
		l.out = os.Stdout
	default:
		// lumberjack opens lazily; open once here so an unwritable path fails
		// at start, not at the first request.
		f, err := os.OpenFile(cfg.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			return nil, fmt.Errorf("%w %s: cannot open it for writing (%v): fix the path or its directory's permissions, or leave --exposure-log empty to run without one", ErrConfig, cfg.Path, err)
		}
		_ = f.Close()
		lj := &lumberjack.Logger{Filename: cfg.Path, MaxSize: cfg.MaxSizeMB, MaxBackups: cfg.MaxBackups, MaxAge: cfg.MaxAgeDays, Compress: cfg.Compress}
		l.out, l.closer = lj, lj
	}
	reg, err := l.register(opts.MeterProvider)
	if err != nil {
		return nil, fmt.Errorf("exposure: metrics: %w", err)
	}
	l.reg = reg
	go l.run()
	return l, nil
}

func (c *Config) defaults() error {
	if c.Path == "" {
		return fmt.Errorf("%w: no path: set --exposure-log to a file or to - for stdout", ErrConfig)
	}
	if c.MaxSizeMB == 0 {
		c.MaxSizeMB = DefaultMaxSizeMB
	}
	if c.MaxBackups == 0 {
		c.MaxBackups = DefaultMaxBackups
	}
	if c.Buffer == 0 {
		c.Buffer = DefaultBuffer
	}
	if c.DropLogInterval <= 0 {
		c.DropLogInterval = DefaultDropLogInterval
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = DefaultFlushInterval
	}
	var errs []error
	if c.MaxSizeMB < 0 || c.MaxBackups < 0 || c.MaxAgeDays < 0 || c.Buffer < 0 {
		errs = append(errs, fmt.Errorf("%w: max size (%d MiB), backups (%d), max age (%d days) and buffer (%d) must not be negative", ErrConfig, c.MaxSizeMB, c.MaxBackups, c.MaxAgeDays, c.Buffer))
	}
	if c.HashKeys && len(c.HashSecret) == 0 {
		errs = append(errs, fmt.Errorf("%w: hashing routing keys needs a secret: give --exposure-hash-secret-file a file with at least 16 random bytes", ErrConfig))
	} else if c.HashKeys && len(c.HashSecret) < 16 {
		errs = append(errs, fmt.Errorf("%w: the hash secret is %d bytes, use at least 16 random bytes", ErrConfig, len(c.HashSecret)))
	}
	return errors.Join(errs...)
}

// Expose queues r for writing, or drops and counts it when the queue is full or
// the log is closing. It never blocks.
func (l *Log) Expose(r Record) {
	if l.closing.Load() {
		l.closed.Add(1)
		return
	}
	select {
	case l.queue <- r:
	default:
		l.full.Add(1)
	}
}

// Stats are a Log's counts since New.
type Stats struct {
	// Written records (the write returned no error).
	Written uint64
	// DroppedFull were dropped because the queue was full.
	DroppedFull uint64
	// DroppedWrite were lost in a write that failed.
	DroppedWrite uint64
	// DroppedClosed arrived after Close began.
	DroppedClosed uint64
}

// Dropped is the sum of every drop.
func (s Stats) Dropped() uint64 { return s.DroppedFull + s.DroppedWrite + s.DroppedClosed }

// Stats returns the log's counts.
func (l *Log) Stats() Stats {
	return Stats{Written: l.written.Load(), DroppedFull: l.full.Load(), DroppedWrite: l.writeErrs.Load(), DroppedClosed: l.closed.Load()}
}

// Close stops accepting records, writes every record already queued, closes
// the file and unregisters the metrics. If ctx ends first (the output blocks),
// Close returns ctx's error and leaves the writer to finish on its own.
func (l *Log) Close(ctx context.Context) error {
	l.once.Do(func() {
		l.closing.Store(true)
		close(l.stop)
	})
	select {
	case <-l.done:
	case <-ctx.Done():
		return fmt.Errorf("exposure: closing: %d records still queued: %w", len(l.queue), ctx.Err())
	}
	err := l.reg.Unregister()
	if l.closer != nil {
		err = errors.Join(err, l.closer.Close())
	}
	return err
}

// run is the writer goroutine.
func (l *Log) run() {
	defer close(l.done)
	w := writer{l: l}
	flush := time.NewTicker(l.cfg.FlushInterval)
	defer flush.Stop()
	drops := time.NewTicker(l.cfg.DropLogInterval)
	defer drops.Stop()
	var lastDrops uint64
	reportDrops := func() {
		if d := l.full.Load() + l.writeErrs.Load(); d != lastDrops {
			l.log.Warn("exposure: records dropped", "dropped", d-lastDrops, "dropped_total", d, "buffer", l.cfg.Buffer,
				"why", "the writer fell behind (queue full) or a write failed; see tfgate_exposure_dropped_total by reason")
			lastDrops = d
		}
	}
	for {
		select {
		case r := <-l.queue:
			w.add(r)
			// Take what is already queued without waiting, then write once.
			for more := true; more && w.buf.Len() < batchBytes; {
				select {
				case r := <-l.queue:
					w.add(r)
				default:
					more = false
				}
			}
			if w.buf.Len() >= batchBytes {
				w.write()
			}
		case <-flush.C:
			w.write()
		case <-drops.C:
			reportDrops()
		case <-l.stop:
		drain:
			for {
				select {
				case r := <-l.queue:
					w.add(r)
					if w.buf.Len() >= batchBytes {
						w.write()
					}
				default:
					break drain
				}
			}
			w.write()
			reportDrops()
			return
		}
	}
}

// writer batches encoded records; used by the writer goroutine only.
type writer struct {
	l    *Log
	buf  bytes.Buffer
	n    uint64 // records in buf
	wire Line
	enc  *json.Encoder
	sum  []byte
	hexb [2 * hashBytes]byte
}

// Line is a record as one JSON line of the log (what readers decode).
type Line struct {
	Time       string  `json:"time"`
	RequestID  string  `json:"request_id,omitempty"`
	TraceID    string  `json:"trace_id,omitempty"`
	Model      string  `json:"model"`
	Ensemble   string  `json:"ensemble,omitempty"`
	Experiment string  `json:"experiment,omitempty"`
	Arm        string  `json:"arm,omitempty"`
	Version    int64   `json:"version"`
	Route      string  `json:"route"`
	Label      string  `json:"label,omitempty"`
	Key        string  `json:"key,omitempty"`
	KeyHash    string  `json:"key_hash,omitempty"`
	Code       string  `json:"code"`
	LatencyMS  float64 `json:"latency_ms"`
}

func (w *writer) add(r Record) {
	if w.enc == nil {
		w.enc = json.NewEncoder(&w.buf)
		w.enc.SetEscapeHTML(false)
	}
	x := &w.wire
	*x = Line{
		Time: r.Time.UTC().Format(time.RFC3339Nano), RequestID: r.RequestID,
		Model: r.Model, Ensemble: r.Ensemble, Experiment: r.Experiment, Arm: r.Arm, Version: r.Version,
		Route: r.Route, Label: r.Label, Code: r.Code.String(),
		LatencyMS: float64(r.Latency.Microseconds()) / 1000,
	}
	if r.TraceID.IsValid() {
		x.TraceID = r.TraceID.String()
	}
	if r.Key != "" {
		if w.l.mac != nil {
			x.KeyHash = w.hash(r.Key)
		} else {
			x.Key = r.Key
		}
	}
	if err := w.enc.Encode(x); err != nil { // strings only: cannot fail
		w.l.log.Error("exposure: encoding a record", "err", err)
		return
	}
	w.n++
}

func (w *writer) hash(key string) string {
	m := w.l.mac
	m.Reset()
	_, _ = io.WriteString(m, key)
	w.sum = m.Sum(w.sum[:0])
	hex.Encode(w.hexb[:], w.sum[:hashBytes])
	return string(w.hexb[:])
}

// write writes the batch; a failed write drops and counts its records.
func (w *writer) write() {
	if w.n == 0 {
		return
	}
	if _, err := w.l.out.Write(w.buf.Bytes()); err != nil {
		w.l.writeErrs.Add(w.n)
		w.l.log.Error("exposure: write failed; its records are dropped", "records", w.n, "err", err)
	} else {
		w.l.written.Add(w.n)
	}
	w.buf.Reset()
	w.n = 0
}

func (l *Log) register(mp metric.MeterProvider) (metric.Registration, error) {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	m := mp.Meter("github.com/tfgate/tfgate/gateway/exposure")
	written, err := m.Int64ObservableCounter("tfgate.exposure.records", metric.WithDescription("Exposure records written to the exposure log."))
	if err != nil {
		return nil, err
	}
	dropped, err := m.Int64ObservableCounter("tfgate.exposure.dropped", metric.WithDescription("Exposure records dropped, by reason: buffer_full (the writer fell behind), write_error (e.g. disk full), closed (after shutdown began)."))
	if err != nil {
		return nil, err
	}
	queued, err := m.Int64ObservableGauge("tfgate.exposure.queued", metric.WithDescription("Exposure records waiting for the writer."))
	if err != nil {
		return nil, err
	}
	reason := func(s string) metric.ObserveOption {
		return metric.WithAttributeSet(attribute.NewSet(attribute.String("reason", s)))
	}
	full, werr, closed := reason("buffer_full"), reason("write_error"), reason("closed")
	return m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(written, int64(l.written.Load()))
		o.ObserveInt64(dropped, int64(l.full.Load()), full)
		o.ObserveInt64(dropped, int64(l.writeErrs.Load()), werr)
		o.ObserveInt64(dropped, int64(l.closed.Load()), closed)
		o.ObserveInt64(queued, int64(len(l.queue)))
		return nil
	}, written, dropped, queued)
}

// ReadSecret reads a hash secret file (surrounding whitespace trimmed).
func ReadSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: hash secret: %v", ErrConfig, err)
	}
	return []byte(strings.TrimSpace(string(b))), nil
}
