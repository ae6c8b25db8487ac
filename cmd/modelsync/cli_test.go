package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/tfgate/tfgate/internal/testenv"
	"github.com/tfgate/tfgate/modelsync/event"
	"github.com/tfgate/tfgate/modelsync/publish"
)

// TestPublishCommand: `modelsync publish` uploads a directory with its SHA-256 in
// metadata and sends an SNS-wrapped S3 notification the sidecar's parser accepts.
func TestPublishCommand(t *testing.T) {
	bin := buildBinary(t)
	s3srv := testenv.StartS3(t)
	s3srv.CreateBucket(t, "models")
	sqsSrv := testenv.StartSQS(t)
	q := sqsSrv.CreateQueue(t, "pub", testenv.QueueOptions{})
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "variables"), 0o755)
	os.WriteFile(filepath.Join(dir, "saved_model.pb"), []byte("graph"), 0o644)
	os.WriteFile(filepath.Join(dir, "variables", "v.data"), []byte("weights"), 0o644)

	cmd := exec.Command(bin, "publish", "-bucket", "models", "-prefix", "prod", "-model", "ctr", "-version", "7",
		"-s3-endpoint", s3srv.Endpoint, "-s3-path-style", "-sqs-endpoint", sqsSrv.Endpoint, "-queue-url", q.URL, "-sns", dir)
	cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID=t", "AWS_SECRET_ACCESS_KEY=t", "AWS_REGION=us-east-1", "AWS_EC2_METADATA_DISABLED=true")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("publish: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "s3://models/prod/ctr/7.tar.gz") {
		t.Errorf("publish output %q", out)
	}
	obj, err := s3srv.Client.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String("models"), Key: aws.String("prod/ctr/7.tar.gz")})
	if err != nil {
		t.Fatal(err)
	}
	if len(obj.Metadata[publish.MetaSHA256]) != 64 {
		t.Errorf("metadata %v: want a sha256", obj.Metadata)
	}
	msgs, err := sqsSrv.Client.ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{QueueUrl: aws.String(q.URL), WaitTimeSeconds: 2})
	if err != nil || len(msgs.Messages) != 1 {
		t.Fatalf("receive: %v %v", msgs, err)
	}
	m, err := event.Parse([]byte(aws.ToString(msgs.Messages[0].Body)), 0)
	if err != nil || !m.SNS || len(m.Records) != 1 || m.Records[0].Key != "prod/ctr/7.tar.gz" || m.Records[0].Size != aws.ToInt64(obj.ContentLength) {
		t.Errorf("notification %+v, %v", m, err)
	}
}

// TestPublishCommandTopic: with -topic, `modelsync publish` publishes the S3 event to an
// SNS topic as S3 would, and every queue subscribed to it receives it SNS-wrapped.
func TestPublishCommandTopic(t *testing.T) {
	bin := buildBinary(t)
	s3srv := testenv.StartS3(t)
	s3srv.CreateBucket(t, "models")
	sqsSrv := testenv.StartSQS(t)
	topic := sqsSrv.CreateTopic(t, "models-events")
	queues := []testenv.Queue{sqsSrv.CreateQueue(t, "host-a", testenv.QueueOptions{}), sqsSrv.CreateQueue(t, "host-b", testenv.QueueOptions{})}
	for _, q := range queues {
		sqsSrv.Subscribe(t, topic, q)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "saved_model.pb"), []byte("graph"), 0o644)

	cmd := exec.Command(bin, "publish", "-bucket", "models", "-model", "ctr", "-version", "8",
		"-s3-endpoint", s3srv.Endpoint, "-s3-path-style", "-sns-endpoint", sqsSrv.Endpoint, "-topic", topic, dir)
	cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID=t", "AWS_SECRET_ACCESS_KEY=t", "AWS_REGION=us-east-1", "AWS_EC2_METADATA_DISABLED=true")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("publish -topic: %v\n%s", err, out)
	}
	for _, q := range queues {
		msgs, err := sqsSrv.Client.ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{QueueUrl: aws.String(q.URL), WaitTimeSeconds: 2})
		if err != nil || len(msgs.Messages) != 1 {
			t.Fatalf("receive from %s: %v %v", q.Name, msgs, err)
		}
		m, err := event.Parse([]byte(aws.ToString(msgs.Messages[0].Body)), 0)
		if err != nil || !m.SNS || len(m.Records) != 1 || m.Records[0].Key != "ctr/8.tar.gz" {
			t.Errorf("%s got %+v, %v; want the SNS-wrapped event for ctr/8.tar.gz", q.Name, m, err)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	bin := buildBinary(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown command", []string{"frobnicate"}, "unknown command"},
		{"run without settings", []string{"run"}, "base_path is required"},
		{"publish without dir", []string{"publish", "-bucket", "b", "-model", "m", "-version", "1"}, "exactly one version directory"},
		{"history without dir", []string{"history"}, "needs -state-dir or -base-path"},
		{"history bad sort", []string{"history", "-state-dir", "/nonexistent", "-sort", "size"}, "sort"},
		{"extract unsafe archive", []string{"extract", "../../modelsync/extract/testdata/traversal.tar.gz", t.TempDir()}, "path contains .."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := exec.Command(bin, tc.args...).CombinedOutput()
			if err == nil || !strings.Contains(string(out), tc.want) {
				t.Errorf("modelsync %q: err %v, output %q; want failure mentioning %q", tc.args, err, out, tc.want)
			}
		})
	}
}
