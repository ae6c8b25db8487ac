package testenv

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"go.uber.org/goleak"

	"github.com/tfgate/tfgate/internal/testwait"
)

func TestStartSQSRedrive(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	srv := StartSQS(t)
	q := srv.CreateQueue(t, "models", QueueOptions{VisibilityTimeout: time.Second, MaxReceiveCount: 2})
	if q.DLQURL == "" || q.ARN == "" {
		t.Fatalf("queue %+v: want DLQ and ARN", q)
	}
	srv.Send(t, q.URL, "hello")
	ctx := context.Background()
	for i := 0; i < 2; i++ { // receive twice without deleting
		out, err := srv.Client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: &q.URL, WaitTimeSeconds: 5, VisibilityTimeout: 1})
		if err != nil || len(out.Messages) != 1 || *out.Messages[0].Body != "hello" {
			t.Fatalf("receive %d: %v %v", i, out, err)
		}
	}
	// The third receive moves it to the dead-letter queue.
	testwait.Until(t, "the message in the dead-letter queue", func() bool {
		out, err := srv.Client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: &q.DLQURL, WaitTimeSeconds: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(out.Messages) == 1 {
			return true
		}
		srv.Client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: &q.URL, WaitTimeSeconds: 1})
		return false
	})
}

func TestStartS3(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	srv := StartS3(t)
	srv.CreateBucket(t, "models")
	ctx := context.Background()
	body := bytes.Repeat([]byte("0123456789"), 1000)
	if _, err := srv.Client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("models"), Key: aws.String("m/1.tar.gz"),
		Body: bytes.NewReader(body), Metadata: map[string]string{"sha256": "abc"}}); err != nil {
		t.Fatal(err)
	}
	out, err := srv.Client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("models"), Key: aws.String("m/1.tar.gz"), Range: aws.String("bytes=9990-")})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(out.Body)
	out.Body.Close()
	if string(got) != "0123456789" || out.Metadata["sha256"] != "abc" {
		t.Errorf("ranged get = %q, metadata %v", got, out.Metadata)
	}
}
