package modelsync

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tfgate/tfgate/internal/testenv"
	"github.com/tfgate/tfgate/modelsync/journal"
	"github.com/tfgate/tfgate/modelsync/publish"
)

// TestSNSFanOut is the production topology: S3's notification goes to one SNS topic,
// every sidecar's queue is subscribed to it, and each sidecar publishes the version
// from the SNS-wrapped message its queue receives.
func TestSNSFanOut(t *testing.T) {
	a := newEnv(t)
	b := &env{t: t, s3: a.s3, sqs: a.sqs, bucket: a.bucket, base: t.TempDir(), s3Addr: a.s3Addr,
		queue: a.sqs.CreateQueue(t, a.queue.Name+"-b", testenv.QueueOptions{VisibilityTimeout: 30 * time.Second, MaxReceiveCount: 5})}
	topic := a.sqs.CreateTopic(t, "models-events")
	a.sqs.Subscribe(t, topic, a.queue)
	a.sqs.Subscribe(t, topic, b.queue)
	sa, sb := a.start(a.config(), Deps{}), b.start(b.config(), Deps{})

	dir := modelDir(t, "ctr", 3, 1000)
	if _, err := publish.PublishWith(context.Background(), publish.PublishClients{S3: a.s3.Client, SNS: a.sqs.SNS}, publish.PublishOptions{
		Bucket: a.bucket, Prefix: "models", Model: "ctr", Version: 3, Dir: dir, Topic: topic,
	}); err != nil {
		t.Fatalf("PublishWith(topic %s): %v", topic, err)
	}
	for _, x := range []struct {
		e  *env
		sc *sidecar
	}{{a, sa}, {b, sb}} {
		x.sc.wait(t, 1, outcome(journal.Published))
		sameTree(t, filepath.Join(x.e.base, "ctr", "3"), dir)
		x.e.queueEmpty()
		x.sc.stop(t)
	}
}

func TestPublishWithValidation(t *testing.T) {
	dir := t.TempDir()
	_, err := publish.PublishWith(context.Background(), publish.PublishClients{}, publish.PublishOptions{Bucket: "b", Model: "m", Version: 1, Dir: dir, Topic: "arn:aws:sns:us-east-1:1:t"})
	if err == nil {
		t.Fatal("PublishWith with a topic and no SNS or S3 client: want an error")
	}
	for _, want := range []string{"a topic needs an SNS client", "an S3 client is required"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}
