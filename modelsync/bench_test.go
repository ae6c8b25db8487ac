package modelsync

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/tfgate/tfgate/modelsync/event"
	"github.com/tfgate/tfgate/modelsync/journal"
	"github.com/tfgate/tfgate/modelsync/publish"
)

// smallArchive is one small model version as .tar.gz.
func smallArchive(b testing.TB) []byte {
	var buf bytes.Buffer
	if err := publish.WriteTarGz(&buf, modelDir(b, "m", 1, 100)); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

func sendBatch(b testing.TB, e *env, bodies []string) {
	for i := 0; i < len(bodies); i += 10 {
		var entries []sqstypes.SendMessageBatchRequestEntry
		for j := i; j < min(i+10, len(bodies)); j++ {
			entries = append(entries, sqstypes.SendMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(j)), MessageBody: aws.String(bodies[j])})
		}
		if _, err := e.sqs.Client.SendMessageBatch(context.Background(), &sqs.SendMessageBatchInput{QueueUrl: aws.String(e.queue.URL), Entries: entries}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDrain drains 5,000 notifications of small models with default settings
// (fsync on) and reports models/s; the baseline in the same run is a bare consumer that
// receives and deletes the same number of messages from the same SQS server, doing no
// S3 or disk work (sqs-only-msgs/s).
func BenchmarkDrain(b *testing.B) {
	const n = 5000
	e := newEnv(b)
	archive := smallArchive(b)
	keys := make([]string, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range n {
		keys[i] = fmt.Sprintf("models/m%05d/1.tar.gz", i)
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if _, err := e.s3.Client.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(e.bucket), Key: aws.String(keys[i]), Body: bytes.NewReader(archive)}); err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
	bodies := make([]string, n)
	for i, k := range keys {
		bodies[i] = string(event.NewCreated(e.bucket, k, int64(len(archive)), "", time.Now()))
	}

	// Baseline: receive and delete, nothing else, with the sidecar's receiver count.
	sendBatch(b, e, bodies)
	start := time.Now()
	var got atomic.Int64
	var bw sync.WaitGroup
	for range DefaultConfig().Receivers {
		bw.Add(1)
		go func() {
			defer bw.Done()
			for got.Load() < n {
				out, err := e.sqs.Client.ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{QueueUrl: aws.String(e.queue.URL), MaxNumberOfMessages: 10, WaitTimeSeconds: 1})
				if err != nil {
					b.Error(err)
					return
				}
				for _, m := range out.Messages {
					e.sqs.Client.DeleteMessage(context.Background(), &sqs.DeleteMessageInput{QueueUrl: aws.String(e.queue.URL), ReceiptHandle: m.ReceiptHandle})
					got.Add(1)
				}
			}
		}()
	}
	bw.Wait()
	baseline := float64(n) / time.Since(start).Seconds()

	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		cfg := e.config()
		cfg.BasePath = b.TempDir()
		cfg.ReceiveWait = DefaultConfig().ReceiveWait
		sendBatch(b, e, bodies)
		var published atomic.Int64
		done := make(chan struct{})
		deps := Deps{S3: e.s3.Client, SQS: e.sqs.Client, OnOutcome: func(en journal.Entry) {
			if en.Outcome == journal.Published && published.Add(1) == n {
				close(done)
			}
		}}
		ctx, cancel := context.WithCancel(context.Background())
		runDone := make(chan error, 1)
		b.StartTimer()
		t0 := time.Now()
		go func() { runDone <- Run(ctx, cfg, deps) }()
		select {
		case <-done:
		case <-time.After(5 * time.Minute):
			b.Fatalf("only %d of %d published", published.Load(), n)
		}
		el := time.Since(t0)
		b.StopTimer()
		cancel()
		<-runDone
		b.ReportMetric(float64(n)/el.Seconds(), "models/s")
		b.ReportMetric(baseline, "sqs-only-msgs/s")
		b.StartTimer()
	}
}

// BenchmarkNotifyToPublished measures, per small model, the time from sending the
// notification to the version being published, and reports it split into the
// download+extract phase (the baseline) and everything else (overhead-ms: SQS delivery,
// scheduling, commit with fsyncs, acknowledgement bookkeeping).
func BenchmarkNotifyToPublished(b *testing.B) {
	e := newEnv(b)
	archive := smallArchive(b)
	cfg := e.config()
	cfg.ReceiveWait = DefaultConfig().ReceiveWait
	outcomes := make(chan journal.Entry, 16)
	deps := Deps{S3: e.s3.Client, SQS: e.sqs.Client, OnOutcome: func(en journal.Entry) { outcomes <- en }}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- Run(ctx, cfg, deps) }()
	defer func() { cancel(); <-runDone }()
	time.Sleep(200 * time.Millisecond) // let the receivers start polling
	var overhead, fetch time.Duration
	v := 0
	for b.Loop() {
		b.StopTimer()
		v++
		key := fmt.Sprintf("models/lat/%d.tar.gz", v)
		if _, err := e.s3.Client.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(e.bucket), Key: aws.String(key), Body: bytes.NewReader(archive)}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		t0 := time.Now()
		e.notify(key, int64(len(archive)), "")
		en := <-outcomes
		el := time.Since(t0)
		if en.Outcome != journal.Published {
			b.Fatalf("outcome %+v", en)
		}
		fe := time.Duration(en.PhasesMS["fetch_extract"] * float64(time.Millisecond))
		fetch += fe
		overhead += el - fe
	}
	b.ReportMetric(float64(overhead.Microseconds())/1000/float64(b.N), "overhead-ms/op")
	b.ReportMetric(float64(fetch.Microseconds())/1000/float64(b.N), "fetch-extract-ms/op")
}
