package batching

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/tfgate/tfgate/internal/tensor"
	tfpb "github.com/tfgate/tfgate/proto/tensorflow"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

// Invoke sends one Predict to the backend (host picking, failover and retries
// included) and returns its response or a gRPC status error.
type Invoke func(ctx context.Context, req *servingpb.PredictRequest) (*servingpb.PredictResponse, error)

// Key names what one Batcher serves. Signature "" is stored as "serving_default".
type Key struct {
	Model     string
	Version   int64
	Signature string
}

func (k Key) String() string {
	return fmt.Sprintf("model %q version %d signature %q", k.Model, k.Version, k.Signature)
}

// DefaultMaxMessageBytes is the batch byte limit when neither Config.MaxBatchBytes nor
// Options.MaxMessageBytes is set.
const DefaultMaxMessageBytes = 64 << 20

// batchOverheadBytes is what the byte estimate adds for a request's model_spec,
// map keys, shapes and framing, on top of the tensors' rows.
const batchOverheadBytes = 4 << 10

// ewmaWeight is the weight of a new service-time sample in the moving average.
const ewmaWeight = 0.25

// fallbackConcurrency bounds the lone re-sends after a batch fails with
// INVALID_ARGUMENT.
const fallbackConcurrency = 8

// Options are a Batcher's (and Group's) dependencies; the zero value works.
type Options struct {
	// Logger; nil discards.
	Logger *slog.Logger
	// MeterProvider; nil is a no-op.
	MeterProvider metric.MeterProvider
	// TracerProvider; nil is a no-op. Each member of a dispatched batch gets a
	// tfgate.batch_wait span (enqueue to dispatch) in its own trace.
	TracerProvider trace.TracerProvider
	// Clock; nil is the real clock.
	Clock Clock
	// MaxMessageBytes is the backend's message size limit (the gateway's client send
	// limit), the batch byte bound when Config.MaxBatchBytes is 0. 0 means
	// DefaultMaxMessageBytes.
	MaxMessageBytes int
	// Key names the batcher in metrics and messages. Group sets it; New callers
	// should.
	Key Key
}

// Errors Do returns wrap one of these sentinels, a context error (the caller's
// context ended), or what Invoke returned. The package chooses no gRPC codes:
// the gateway maps each sentinel in one place (gateway.Code); the codes named
// here are what a caller gets there.
var (
	// ErrClosed: Do after Close; the gateway is shutting down. UNAVAILABLE.
	ErrClosed = errors.New("batcher closed")
	// ErrInvalidConfig: the model's batching config does not validate, so its
	// requests are refused rather than sent unbatched. FAILED_PRECONDITION.
	ErrInvalidConfig = errors.New("invalid batching config")
	// ErrInvalidRequest: the request cannot be batched as sent (malformed input
	// tensors, inputs with different row counts, more rows than max_batch_size,
	// no explicit version), the same answers TF Serving gives. INVALID_ARGUMENT.
	ErrInvalidRequest = errors.New("invalid request")
	// ErrQueueFull: the request would need one batch more than
	// max_enqueued_batches; load is shed. RESOURCE_EXHAUSTED.
	ErrQueueFull = errors.New("batch queue full")
	// ErrDeadline: the request's deadline passed before it could be queued, or
	// is shorter than a lone backend call is expected to take. DEADLINE_EXCEEDED.
	ErrDeadline = errors.New("deadline too short")
)

type result struct {
	resp *servingpb.PredictResponse
	err  error
}

// task is one request waiting in, or sent by, a batch.
type task struct {
	ctx         context.Context
	req         *servingpb.PredictRequest
	key         string             // compatibility key: what it may be batched with
	names       []string           // input names, sorted
	dims        map[string][]int64 // input dims
	rows        int64
	rowBytes    int64       // encoded input bytes per row, rounded up
	wire        []wireInput // the inputs, when still encoded (wire.go); sorted by name
	deadline    time.Time
	hasDeadline bool
	enqueued    time.Time
	batch       *batch // while queued; nil once dispatched (guarded by Batcher.mu)
	done        chan result
}

type batchState int

const (
	batchOpen   batchState = iota // accepting members
	batchClosed                   // full, waiting for a backend slot
	batchSent                     // dispatched
)

// batch is a group of tasks queued together. An open batch keeps accepting members
// until a backend slot takes it, even after it is due: under load, batches grow
// while the backend is busy instead of queueing up small.
type batch struct {
	key         string
	tasks       []*task
	rows        int64
	maxRowBytes int64
	due         time.Time // when it may go without being full
	dueReached  bool      // due has passed: a free slot takes it
	state       batchState
	stopTimer   func() bool
	timerGen    int
}

// dispatchable reports whether a free slot may take bt now.
func (bt *batch) dispatchable() bool {
	return bt.state == batchClosed || bt.state == batchOpen && bt.dueReached
}

// Batcher batches requests for one (model, version, signature). See the package
// documentation for its semantics.
type Batcher struct {
	pools    []string // the host pools invoke sends to, when a Group made b
	cfg      Config
	cfgErr   error
	invoke   Invoke
	log      *slog.Logger
	clock    Clock
	m        *metrics
	tracer   trace.Tracer
	key      Key
	maxBytes int64

	hardCtx    context.Context // cancelled when Close gives up waiting
	hardCancel context.CancelFunc
	wg         sync.WaitGroup // dispatched batches

	mu        sync.Mutex
	closed    bool
	open      map[string]*batch // the open batch of each compatibility key
	queue     []*batch          // every queued batch, open or closed, oldest first
	inFlight  int
	ewma      time.Duration // batched backend calls
	ewmaAlone time.Duration // lone backend calls
}

// New returns a Batcher that sends batches through invoke. An invalid cfg makes
// every Do fail with FAILED_PRECONDITION naming the problem (configs are validated
// when loaded; this is a guard).
func New(cfg Config, invoke Invoke, opts Options) *Batcher {
	b := &Batcher{
		cfg:    cfg,
		cfgErr: cfg.Validate(),
		invoke: invoke,
		log:    opts.Logger,
		clock:  opts.Clock,
		m:      newMetrics(opts.MeterProvider, opts.Key),
		key:    opts.Key,
		open:   make(map[string]*batch),
	}
	if b.log == nil {
		b.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if b.clock == nil {
		b.clock = realClock{}
	}
	tp := opts.TracerProvider
	if tp == nil {
		tp = tracenoop.NewTracerProvider()
	}
	b.tracer = tp.Tracer("github.com/tfgate/tfgate/gateway/batching")
	b.maxBytes = int64(cfg.MaxBatchBytes)
	if b.maxBytes == 0 {
		b.maxBytes = int64(opts.MaxMessageBytes)
	}
	if b.maxBytes == 0 {
		b.maxBytes = DefaultMaxMessageBytes
	}
	b.hardCtx, b.hardCancel = context.WithCancel(context.Background())
	return b
}

// Config returns the settings b was created with.
func (b *Batcher) Config() Config { return b.cfg }

// Do sends req to the backend as part of a batch and returns the response holding
// only req's rows. It returns when the response is ready, the request fails, or ctx
// ends.
func (b *Batcher) Do(ctx context.Context, req *servingpb.PredictRequest) (*servingpb.PredictResponse, error) {
	if b.cfgErr != nil {
		return nil, fmt.Errorf("%w for %s: %w", ErrInvalidConfig, b.key, b.cfgErr)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	t, batchable, err := b.prepare(ctx, req)
	if err != nil {
		return nil, err
	}
	if !batchable {
		b.m.aloneOne("unbatchable")
		return b.alone(ctx, req)
	}
	switch verdict, err := b.enqueue(t); verdict {
	case enqueued:
	case goAlone:
		b.m.aloneOne("deadline")
		return b.alone(ctx, req)
	default:
		return nil, err
	}
	select {
	case r := <-t.done:
		return r.resp, r.err
	case <-ctx.Done():
		b.withdraw(t)
		return nil, ctx.Err()
	}
}

// alone sends req by itself with the caller's context, measuring it.
func (b *Batcher) alone(ctx context.Context, req *servingpb.PredictRequest) (*servingpb.PredictResponse, error) {
	start := b.clock.Now()
	resp, err := b.invoke(ctx, req)
	if err == nil {
		b.observe(&b.ewmaAlone, b.clock.Now().Sub(start))
	}
	return resp, err
}

func (b *Batcher) observe(avg *time.Duration, d time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if *avg == 0 {
		*avg = d
		return
	}
	*avg += time.Duration(ewmaWeight * float64(d-*avg))
}

// writeKeyPart appends "len:s\x00" to a compatibility key (what
// fmt.Fprintf(key, "%d:%s\x00") wrote, without fmt's reflection: it ran for
// every input of every request, 3% of the gateway's CPU with batching).
func writeKeyPart(key *strings.Builder, s string) {
	key.WriteString(strconv.Itoa(len(s)))
	key.WriteByte(':')
	key.WriteString(s)
	key.WriteByte(0)
}

// prepare validates req and computes what it may be batched with. It returns
// batchable=false for requests that are valid but must go alone.
func (b *Batcher) prepare(ctx context.Context, req *servingpb.PredictRequest) (*task, bool, error) {
	if ins, ok := b.prepareWire(req); ok {
		if t, ok := b.prepareFromWire(ctx, req, ins); ok {
			return t, true, nil
		}
	}
	// Inputs kept encoded that the wire path does not take are decoded here, so
	// that every decision and error below is the decoded request's.
	if err := tensor.DecodeKept(req, fieldReqInputs); err != nil {
		return nil, false, fmt.Errorf("%w: %s: %w", ErrInvalidRequest, b.key, err)
	}
	inputs := req.GetInputs()
	if len(inputs) == 0 {
		return nil, false, nil
	}
	t := &task{ctx: ctx, req: req, dims: make(map[string][]int64, len(inputs)), done: make(chan result, 1), rows: -1}
	for name := range inputs {
		t.names = append(t.names, name)
	}
	slices.Sort(t.names)
	var key strings.Builder
	var firstName string
	batchable := true
	for _, name := range t.names {
		tp := inputs[name]
		if _, err := tensor.Len(tp); err != nil {
			if errors.Is(err, tensor.ErrDType) {
				batchable = false // a dtype tensor does not handle: the backend decides
				continue
			}
			return nil, false, fmt.Errorf("%w: %s: input %q is malformed: %v; make its shape match its values", ErrInvalidRequest, b.key, name, err)
		}
		dims, err := tensor.Dims(tp)
		if err != nil {
			return nil, false, fmt.Errorf("%w: %s: input %q is malformed: %v", ErrInvalidRequest, b.key, name, err)
		}
		if len(dims) == 0 {
			batchable = false
			continue
		}
		t.dims[name] = dims
		switch {
		case t.rows < 0:
			t.rows, firstName = dims[0], name
		case dims[0] != t.rows:
			return nil, false, fmt.Errorf("%w: %s: input %q has %d rows but input %q has %d; all inputs must have the same size in dimension 0",
				ErrInvalidRequest, b.key, name, dims[0], firstName, t.rows)
		}
		b.writeKeyInput(&key, name, tp.GetDtype(), dims)
	}
	if t.rows > int64(b.cfg.MaxBatchSize) {
		return nil, false, fmt.Errorf("%w: %s: the request has %d rows (dimension 0 of its inputs), more than batching max_batch_size %d; send at most %d rows per request",
			ErrInvalidRequest, b.key, t.rows, b.cfg.MaxBatchSize, b.cfg.MaxBatchSize)
	}
	if !batchable || t.rows <= 0 {
		return nil, false, nil
	}
	t.key = finishKey(&key, req)
	var inBytes int64
	for _, name := range t.names {
		inBytes += int64(proto.Size(inputs[name]))
	}
	t.rowBytes = (inBytes + t.rows - 1) / t.rows
	if t.rowBytes*b.cfg.paddedSize(t.rows)+batchOverheadBytes > b.maxBytes {
		return nil, false, nil // too big to share a batch; the backend's limit decides
	}
	t.deadline, t.hasDeadline = ctx.Deadline()
	return t, true, nil
}

// writeKeyInput appends one input's part of a compatibility key.
func (b *Batcher) writeKeyInput(key *strings.Builder, name string, dt tfpb.DataType, dims []int64) {
	writeKeyPart(key, name) // length-prefixed: no collisions
	key.WriteString(strconv.Itoa(int(dt)))
	key.WriteByte(0)
	if b.cfg.PadVariableLengthInputs && !slices.Contains(dims[1:], 0) {
		// Ragged: only the rank must match. (A tensor with an empty inner
		// dimension has no element to pad with; it batches only with its shape.)
		key.WriteByte('r')
		key.WriteString(strconv.Itoa(len(dims)))
		key.WriteByte(0)
	} else {
		for _, d := range dims[1:] {
			key.WriteString(strconv.FormatInt(d, 10))
			key.WriteByte(',')
		}
		key.WriteByte(0)
	}
}

// finishKey appends the output filter to a compatibility key.
func finishKey(key *strings.Builder, req *servingpb.PredictRequest) string {
	key.WriteString("filter\x00")
	for _, f := range req.GetOutputFilter() {
		writeKeyPart(key, f)
	}
	return key.String()
}

// prepareFromWire is prepare for inputs read from the wire (prepareWire), for a
// request that batches; ok is false for anything else (prepare then decides on
// the decoded request: errors, requests that go alone).
func (b *Batcher) prepareFromWire(ctx context.Context, req *servingpb.PredictRequest, ins []wireInput) (*task, bool) {
	// t.dims is filled only if t must be decoded (assemble).
	t := &task{ctx: ctx, req: req, wire: ins, names: make([]string, 0, len(ins)), done: make(chan result, 1), rows: ins[0].dimBuf[0]}
	var key strings.Builder
	key.Grow(64)
	var inBytes int64
	for i := range ins {
		in := &ins[i]
		if in.dimBuf[0] != t.rows {
			return nil, false
		}
		t.names = append(t.names, in.name)
		b.writeKeyInput(&key, in.name, in.dtype, in.dims())
		inBytes += int64(in.nbytes)
	}
	if t.rows <= 0 || t.rows > int64(b.cfg.MaxBatchSize) {
		return nil, false
	}
	t.key = finishKey(&key, req)
	t.rowBytes = (inBytes + t.rows - 1) / t.rows
	if t.rowBytes*b.cfg.paddedSize(t.rows)+batchOverheadBytes > b.maxBytes {
		return nil, false
	}
	t.deadline, t.hasDeadline = ctx.Deadline()
	return t, true
}

type verdict int

const (
	enqueued verdict = iota
	goAlone
	refused
)

// enqueue adds t to an open batch of its key, starting one if needed.
func (b *Batcher) enqueue(t *task) (verdict, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return refused, fmt.Errorf("%s: %w; the gateway is shutting down, retry on another instance", b.key, ErrClosed)
	}
	now := b.clock.Now()
	t.enqueued = now
	cur := b.open[t.key]
	if t.hasDeadline {
		remaining := t.deadline.Sub(now)
		if remaining <= 0 {
			b.m.shedOne("deadline")
			return refused, fmt.Errorf("%w: %s: the request's deadline passed before it could be queued", ErrDeadline, b.key)
		}
		latest := t.deadline.Add(-b.ewma - b.slotWait(cur))
		if !latest.After(now) {
			if b.ewmaAlone > 0 && remaining < b.ewmaAlone {
				b.m.shedOne("deadline")
				return refused, fmt.Errorf("%w: %s: the request's remaining deadline %v is shorter than the expected backend time %v; give it a longer deadline",
					ErrDeadline, b.key, remaining, b.ewmaAlone)
			}
			return goAlone, nil
		}
	}
	if cur != nil && !b.fits(cur, t) {
		b.closeBatch(cur)
		cur = nil
	}
	if cur == nil {
		if len(b.queue) >= b.cfg.MaxEnqueuedBatches {
			b.m.shedOne("queue_full")
			return refused, fmt.Errorf("%w: batch queue for model %q version %d is full: %d batches of up to %d rows queued (max_enqueued_batches %d); retry with backoff, or raise max_enqueued_batches or add hosts",
				ErrQueueFull, b.key.Model, b.key.Version, len(b.queue), b.cfg.MaxBatchSize, b.cfg.MaxEnqueuedBatches)
		}
		cur = &batch{key: t.key, due: now.Add(b.cfg.BatchTimeout)}
		b.open[t.key] = cur
		b.queue = append(b.queue, cur)
	}
	cur.tasks = append(cur.tasks, t)
	cur.rows += t.rows
	cur.maxRowBytes = max(cur.maxRowBytes, t.rowBytes)
	t.batch = cur
	b.m.depth(1)
	if t.hasDeadline {
		if latest := t.deadline.Add(-b.ewma - b.slotWait(cur)); latest.Before(cur.due) {
			cur.due = latest // early dispatch for this member's deadline
		}
	}
	switch {
	case cur.rows >= int64(b.cfg.MaxBatchSize):
		b.closeBatch(cur)
	case !cur.due.After(now):
		b.reachDue(cur)
	default:
		b.armTimer(cur, now)
	}
	return enqueued, nil
}

// slotWait estimates how long a batch closed now would wait for a backend slot:
// the batches ahead of it in whole rounds of max_in_flight_batches service times.
// cur, if open, is not counted as ahead.
func (b *Batcher) slotWait(cur *batch) time.Duration {
	ahead := b.inFlight + len(b.queue)
	if cur != nil {
		ahead-- // cur itself is queued
	}
	if ahead < b.cfg.MaxInFlightBatches {
		return 0
	}
	rounds := (ahead-b.cfg.MaxInFlightBatches)/b.cfg.MaxInFlightBatches + 1
	return time.Duration(rounds) * b.ewma
}

// fits reports whether t can join bt within the row and byte limits.
func (b *Batcher) fits(bt *batch, t *task) bool {
	rows := bt.rows + t.rows
	if rows > int64(b.cfg.MaxBatchSize) {
		return false
	}
	return b.cfg.paddedSize(rows)*max(bt.maxRowBytes, t.rowBytes)+batchOverheadBytes <= b.maxBytes
}

func (b *Batcher) armTimer(bt *batch, now time.Time) {
	if bt.stopTimer != nil {
		bt.stopTimer()
	}
	bt.timerGen++
	gen := bt.timerGen
	bt.stopTimer = b.clock.AfterFunc(bt.due.Sub(now), func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if bt.state == batchOpen && bt.timerGen == gen {
			b.reachDue(bt)
		}
	})
}

// closeBatch stops an open batch from taking members (it is full, or a member does
// not fit) and dispatches what slots allow. Called with b.mu held.
func (b *Batcher) closeBatch(bt *batch) {
	if bt.state != batchOpen {
		return
	}
	b.stopTimerOf(bt)
	if b.open[bt.key] == bt {
		delete(b.open, bt.key)
	}
	bt.state = batchClosed
	b.pump()
}

// reachDue marks an open batch as due (its timeout or a member's deadline came):
// the next free slot takes it; until then it keeps taking members. Called with b.mu
// held.
func (b *Batcher) reachDue(bt *batch) {
	b.stopTimerOf(bt)
	bt.dueReached = true
	b.pump()
}

func (b *Batcher) stopTimerOf(bt *batch) {
	if bt.stopTimer != nil {
		bt.stopTimer()
		bt.stopTimer = nil
	}
}

// pump dispatches the oldest dispatchable batches while backend slots are free.
// Called with b.mu held.
func (b *Batcher) pump() {
	for b.inFlight < b.cfg.MaxInFlightBatches {
		i := slices.IndexFunc(b.queue, (*batch).dispatchable)
		if i < 0 {
			return
		}
		bt := b.queue[i]
		b.queue = slices.Delete(b.queue, i, i+1)
		b.stopTimerOf(bt)
		if b.open[bt.key] == bt {
			delete(b.open, bt.key)
		}
		bt.state = batchSent
		for _, t := range bt.tasks {
			t.batch = nil
		}
		b.m.depth(-int64(len(bt.tasks)))
		b.inFlight++
		b.wg.Add(1)
		go b.run(bt)
	}
}

// withdraw takes a cancelled caller's task out of its batch if it was not sent yet.
func (b *Batcher) withdraw(t *task) {
	b.mu.Lock()
	defer b.mu.Unlock()
	bt := t.batch
	if bt == nil {
		return // already dispatched: the batch goes on, the result is dropped
	}
	t.batch = nil
	i := slices.Index(bt.tasks, t)
	bt.tasks = slices.Delete(bt.tasks, i, i+1)
	bt.rows -= t.rows
	b.m.depth(-1)
	if len(bt.tasks) > 0 {
		return
	}
	b.stopTimerOf(bt)
	bt.state = batchSent // never dispatched: it is simply dropped
	if b.open[bt.key] == bt {
		delete(b.open, bt.key)
	}
	if i := slices.Index(b.queue, bt); i >= 0 {
		b.queue = slices.Delete(b.queue, i, i+1)
	}
}

// run sends one batch and delivers each member its rows.
func (b *Batcher) run(bt *batch) {
	defer func() {
		b.mu.Lock()
		b.inFlight--
		b.pump()
		b.mu.Unlock()
		b.wg.Done()
	}()
	start := b.clock.Now()
	for _, t := range bt.tasks {
		b.m.queueWait.Record(context.Background(), start.Sub(t.enqueued).Seconds(), b.m.with())
		if sc := trace.SpanContextFromContext(t.ctx); sc.IsSampled() {
			_, sp := b.tracer.Start(t.ctx, "tfgate.batch_wait", trace.WithTimestamp(t.enqueued))
			if sp.IsRecording() { // no attribute set to build for a span no one records
				sp.SetAttributes(attribute.Int("tfgate.batch.members", len(bt.tasks)), attribute.Int64("tfgate.batch.rows", bt.rows))
			}
			sp.End(trace.WithTimestamp(start))
		}
	}
	if len(bt.tasks) == 1 {
		t := bt.tasks[0]
		b.m.batchSize.Record(context.Background(), t.rows, b.m.with())
		if b.cfg.paddedSize(t.rows) == t.rows {
			// Nothing to concatenate or pad: send the request itself.
			resp, err := b.send(t.ctx, t.req, bt)
			t.done <- result{resp, err}
			return
		}
	}
	req, rows, err := b.assemble(bt)
	if err != nil {
		// Members were validated; this is a bug or an input the checks missed.
		b.log.Error("batching: cannot assemble batch, sending members alone", "key", b.key.String(), "err", err)
		b.fallback(bt, "assemble")
		return
	}
	if len(bt.tasks) > 1 {
		b.m.batchSize.Record(context.Background(), bt.rows, b.m.with())
	}
	if pad := b.cfg.paddedSize(bt.rows) - bt.rows; pad > 0 {
		b.m.paddingRows.Add(context.Background(), pad, b.m.with())
	}
	resp, err := b.send(bt.tasks[0].ctx, req, bt)
	if err != nil {
		// The backend's own INVALID_ARGUMENT (read, not built, here): one member's
		// input or the batch as a whole was rejected.
		if status.Code(err) == codes.InvalidArgument && len(bt.tasks) > 1 {
			b.fallback(bt, "invalid_argument")
			return
		}
		for _, t := range bt.tasks {
			t.done <- result{nil, err}
		}
		return
	}
	parts, err := split(resp, rows, b.cfg.paddedSize(bt.rows))
	if err != nil {
		b.log.Warn("batching: backend outputs do not follow the batch rows; sending members alone",
			"key", b.key.String(), "err", err)
		b.fallback(bt, "split")
		return
	}
	for i, t := range bt.tasks {
		t.done <- result{parts[i], nil}
	}
}

// send makes one backend call for bt on a context no single caller can cancel: the
// values of from, the latest member deadline, cancelled only by a Close that gives up.
func (b *Batcher) send(from context.Context, req *servingpb.PredictRequest, bt *batch) (*servingpb.PredictResponse, error) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(from))
	defer cancel()
	var latest time.Time
	for _, t := range bt.tasks {
		if !t.hasDeadline {
			latest = time.Time{}
			break
		}
		if t.deadline.After(latest) {
			latest = t.deadline
		}
	}
	if !latest.IsZero() {
		var dcancel context.CancelFunc
		ctx, dcancel = context.WithDeadline(ctx, latest)
		defer dcancel()
	}
	stop := context.AfterFunc(b.hardCtx, cancel)
	defer stop()
	start := b.clock.Now()
	resp, err := b.invoke(ctx, req)
	if err == nil {
		b.observe(&b.ewma, b.clock.Now().Sub(start))
	}
	return resp, err
}

// assemble builds the batched request: inputs concatenated (inner dims padded when
// configured), rows padded to an allowed size. rows[i] is member i's row count.
func (b *Batcher) assemble(bt *batch) (*servingpb.PredictRequest, []int64, error) {
	first := bt.tasks[0]
	rows := make([]int64, len(bt.tasks))
	wire := true
	for i, t := range bt.tasks {
		rows[i] = t.rows
		wire = wire && t.wire != nil
	}
	padTo := b.cfg.paddedSize(bt.rows)
	if wire {
		return b.assembleWire(bt, padTo), rows, nil
	}
	for _, t := range bt.tasks { // a wire task in a batch with decoded ones
		if t.wire != nil && t.dims == nil {
			if err := tensor.DecodeKept(t.req, fieldReqInputs); err != nil {
				return nil, nil, err
			}
			t.dims = make(map[string][]int64, len(t.wire))
			for i := range t.wire {
				t.dims[t.wire[i].name] = t.wire[i].dims()
			}
		}
	}
	inputs := make(map[string]*tfpb.TensorProto, len(first.names))
	parts := make([]*tfpb.TensorProto, len(bt.tasks))
	for _, name := range first.names {
		target := slices.Clone(first.dims[name])
		for _, t := range bt.tasks {
			for j, d := range t.dims[name] {
				target[j] = max(target[j], d)
			}
		}
		for i, t := range bt.tasks {
			tp := t.req.GetInputs()[name]
			if b.cfg.PadVariableLengthInputs && !slices.Equal(t.dims[name][1:], target[1:]) {
				padded, err := tensor.PadInner(tp, target)
				if err != nil {
					return nil, nil, fmt.Errorf("input %q of member %d: %w", name, i, err)
				}
				tp = padded
			}
			parts[i] = tp
		}
		cat, err := tensor.Concat(parts, padTo)
		if err != nil {
			return nil, nil, fmt.Errorf("input %q: %w", name, err)
		}
		inputs[name] = cat
	}
	return &servingpb.PredictRequest{
		ModelSpec:    first.req.GetModelSpec(),
		Inputs:       inputs,
		OutputFilter: first.req.GetOutputFilter(),
	}, rows, nil
}

// split cuts every output of resp into the members' rows; padding rows are dropped.
// Every output must have exactly sent rows in dimension 0, as TF Serving's batching
// requires: an output that is not per row cannot be divided among callers.
func split(resp *servingpb.PredictResponse, rows []int64, sent int64) ([]*servingpb.PredictResponse, error) {
	if recs := tensor.KeptRecords(resp.ProtoReflect(), fieldRespOutputs); recs != nil {
		if out, ok, err := splitWire(resp, recs, rows, sent); ok {
			return out, err
		}
		if err := tensor.DecodeKept(resp, fieldRespOutputs); err != nil {
			return nil, err
		}
	}
	out := make([]*servingpb.PredictResponse, len(rows))
	for i := range out {
		out[i] = &servingpb.PredictResponse{
			ModelSpec: proto.CloneOf(resp.GetModelSpec()),
			Outputs:   make(map[string]*tfpb.TensorProto, len(resp.GetOutputs())),
		}
	}
	for name, tp := range resp.GetOutputs() {
		n, err := tensor.Rows(tp)
		if err != nil {
			return nil, fmt.Errorf("output %q: %w", name, err)
		}
		if n != sent {
			return nil, fmt.Errorf("output %q has %d rows in dimension 0 for a batch of %d", name, n, sent)
		}
		pieces, err := tensor.Split(tp, rows)
		if err != nil {
			return nil, fmt.Errorf("output %q: %w", name, err)
		}
		for i, p := range pieces {
			out[i].Outputs[name] = p
		}
	}
	return out, nil
}

// fallback sends each member of a failed batch alone, on its own context, and gives
// each its own result. It runs in the batch's slot, so backend load stays bounded.
func (b *Batcher) fallback(bt *batch, reason string) {
	sem := make(chan struct{}, fallbackConcurrency)
	var wg sync.WaitGroup
	for _, t := range bt.tasks {
		b.m.aloneOne("fallback_" + reason)
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := t.ctx.Err(); err != nil {
				t.done <- result{nil, err}
				return
			}
			resp, err := b.alone(t.ctx, t.req)
			t.done <- result{resp, err}
		}()
	}
	wg.Wait()
}

// Close stops accepting requests, sends everything queued, and waits for in-flight
// batches. If ctx ends first it cancels their backend calls, waits for them to
// return, and returns ctx's error. Close is idempotent.
func (b *Batcher) Close(ctx context.Context) error {
	b.mu.Lock()
	b.closed = true
	for _, bt := range b.queue {
		bt.dueReached = true
	}
	b.pump()
	b.mu.Unlock()
	done := make(chan struct{})
	go func() {
		b.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		b.hardCancel()
		return nil
	case <-ctx.Done():
		b.hardCancel()
		<-done
		return ctx.Err()
	}
}

// stats is a snapshot for tests.
type stats struct {
	queuedTasks, openBatches, queuedBatches, inFlight int
	ewma, ewmaAlone                                   time.Duration
}

func (b *Batcher) stats() stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := stats{openBatches: len(b.open), queuedBatches: len(b.queue), inFlight: b.inFlight, ewma: b.ewma, ewmaAlone: b.ewmaAlone}
	for _, bt := range b.queue {
		s.queuedTasks += len(bt.tasks)
	}
	return s
}
