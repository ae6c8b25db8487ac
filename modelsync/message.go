package modelsync

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/tfgate/tfgate/modelsync/event"
	"github.com/tfgate/tfgate/modelsync/journal"
)

// The SQS message lifecycle: receive (long poll), turn a notification into jobs,
// keep it invisible while they run (heartbeat), and settle it (delete, or make it
// visible again for a retry).

type message struct {
	id       string
	receipt  string
	receives int
	mu       sync.Mutex
	pending  int
	retry    bool
	abandon  bool
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
		if s.place != nil {
			if why, skip := s.place.skip(model, v); skip {
				e.Model, e.Version = model, v
				e.Outcome, e.Reason = journal.Ignored, why
				s.record(e)
				continue
			}
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
