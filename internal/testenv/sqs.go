package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// FauxqsCLI is fauxqs's entry point relative to CacheDir (scripts/tools.sh fauxqs).
const FauxqsCLI = "fauxqs/node_modules/fauxqs/dist/cli.js"

// Region is the AWS region every test client uses.
const Region = "us-east-1"

// AWSConfig is an SDK config with static test credentials, for clients of the loopback
// SQS and S3 servers.
func AWSConfig() aws.Config {
	return aws.Config{
		Region:      Region,
		Credentials: credentials.NewStaticCredentialsProvider("test", "test", ""),
	}
}

// SQSServer is a fauxqs process on loopback. It speaks SNS on the same endpoint, with
// SNS -> SQS fan-out to subscribed queues.
type SQSServer struct {
	// Endpoint is the base URL, e.g. http://127.0.0.1:4566.
	Endpoint string
	// Client talks to it.
	Client *sqs.Client
	// SNS talks to its SNS side.
	SNS *sns.Client
}

// QueueOptions shape a test queue. Zero fields keep SQS defaults.
type QueueOptions struct {
	// VisibilityTimeout of received messages. Default (0): SQS's 30 s.
	VisibilityTimeout time.Duration
	// MaxReceiveCount > 0 creates a dead-letter queue "<name>-dlq" and a redrive policy
	// moving a message there after that many receives.
	MaxReceiveCount int
}

// Queue is a created queue.
type Queue struct {
	Name   string
	URL    string
	ARN    string
	DLQURL string // empty without MaxReceiveCount
}

// StartSQS starts fauxqs on a free loopback port and waits until it answers. The
// process is killed when the test ends. Skips (Fatal in CI) when fauxqs is not installed.
func StartSQS(t testing.TB) *SQSServer {
	t.Helper()
	cli := RequireTool(t, FauxqsCLI)
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("node not on PATH: %v", err)
		}
		t.Skipf("skipping: node not on PATH: %v", err)
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ { // a port taken between FreePort and bind
		srv, err := startFauxqs(t, node, cli)
		if err == nil {
			return srv
		}
		lastErr = err
	}
	t.Fatalf("start fauxqs: %v", lastErr)
	return nil
}

func startFauxqs(t testing.TB, node, cli string) (*SQSServer, error) {
	port := FreePort(t)
	cmd := exec.Command(node, cli)
	cmd.Env = append(os.Environ(), "FAUXQS_PORT="+strconv.Itoa(port), "FAUXQS_HOST=", "FAUXQS_LOGGER=false")
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
	endpoint := fmt.Sprintf("http://127.0.0.1:%d", port)
	client := sqs.NewFromConfig(AWSConfig(), func(o *sqs.Options) {
		o.BaseEndpoint = aws.String(endpoint)
		o.RetryMaxAttempts = 1
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := client.ListQueues(ctx, &sqs.ListQueuesInput{})
		cancel()
		if err == nil {
			break
		}
		select {
		case werr := <-exited:
			return nil, fmt.Errorf("fauxqs exited (%v): %s", werr, out.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("fauxqs on %s not ready after 30s: %v: %s", endpoint, err, out.String())
		}
	}
	t.Cleanup(stop)
	return &SQSServer{
		Endpoint: endpoint,
		Client: sqs.NewFromConfig(AWSConfig(), func(o *sqs.Options) {
			o.BaseEndpoint = aws.String(endpoint)
		}),
		SNS: sns.NewFromConfig(AWSConfig(), func(o *sns.Options) {
			o.BaseEndpoint = aws.String(endpoint)
		}),
	}, nil
}

// CreateTopic creates an SNS topic and returns its ARN.
func (s *SQSServer) CreateTopic(t testing.TB, name string) string {
	t.Helper()
	out, err := s.SNS.CreateTopic(context.Background(), &sns.CreateTopicInput{Name: aws.String(name)})
	if err != nil {
		t.Fatalf("create topic %s: %v", name, err)
	}
	return aws.ToString(out.TopicArn)
}

// Subscribe subscribes a queue to a topic, as the production topology does (one
// bucket-notification topic, every sidecar's queue subscribed). Delivery is not raw:
// the queue receives SNS's Notification envelope around the message, as in production.
func (s *SQSServer) Subscribe(t testing.TB, topicARN string, q Queue) {
	t.Helper()
	if _, err := s.SNS.Subscribe(context.Background(), &sns.SubscribeInput{
		TopicArn: aws.String(topicARN), Protocol: aws.String("sqs"), Endpoint: aws.String(q.ARN),
	}); err != nil {
		t.Fatalf("subscribe %s to %s: %v", q.Name, topicARN, err)
	}
}

// CreateQueue creates a queue (and with MaxReceiveCount its dead-letter queue).
func (s *SQSServer) CreateQueue(t testing.TB, name string, opt QueueOptions) Queue {
	t.Helper()
	ctx := context.Background()
	q := Queue{Name: name}
	attrs := map[string]string{}
	if opt.VisibilityTimeout > 0 {
		attrs["VisibilityTimeout"] = strconv.Itoa(int((opt.VisibilityTimeout + time.Second - 1) / time.Second))
	}
	if opt.MaxReceiveCount > 0 {
		dlq, err := s.Client.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name + "-dlq")})
		if err != nil {
			t.Fatalf("create DLQ %s-dlq: %v", name, err)
		}
		q.DLQURL = *dlq.QueueUrl
		arn := s.queueARN(t, q.DLQURL)
		pol, _ := json.Marshal(map[string]string{"deadLetterTargetArn": arn, "maxReceiveCount": strconv.Itoa(opt.MaxReceiveCount)})
		attrs["RedrivePolicy"] = string(pol)
	}
	out, err := s.Client.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name), Attributes: attrs})
	if err != nil {
		t.Fatalf("create queue %s: %v", name, err)
	}
	q.URL = *out.QueueUrl
	q.ARN = s.queueARN(t, q.URL)
	return q
}

func (s *SQSServer) queueARN(t testing.TB, url string) string {
	t.Helper()
	out, err := s.Client.GetQueueAttributes(context.Background(), &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(url), AttributeNames: []types.QueueAttributeName{"QueueArn"},
	})
	if err != nil {
		t.Fatalf("queue ARN of %s: %v", url, err)
	}
	return out.Attributes["QueueArn"]
}

// Send puts one message body on a queue.
func (s *SQSServer) Send(t testing.TB, queueURL, body string) {
	t.Helper()
	if _, err := s.Client.SendMessage(context.Background(), &sqs.SendMessageInput{
		QueueUrl: aws.String(queueURL), MessageBody: aws.String(body),
	}); err != nil {
		t.Fatalf("send to %s: %v", queueURL, err)
	}
}

// Count is the approximate number of messages on a queue, visible and in flight.
func (s *SQSServer) Count(t testing.TB, queueURL string) (visible, inFlight int) {
	t.Helper()
	out, err := s.Client.GetQueueAttributes(context.Background(), &sqs.GetQueueAttributesInput{
		QueueUrl:       aws.String(queueURL),
		AttributeNames: []types.QueueAttributeName{"ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"},
	})
	if err != nil {
		t.Fatalf("attributes of %s: %v", queueURL, err)
	}
	visible, _ = strconv.Atoi(out.Attributes["ApproximateNumberOfMessages"])
	inFlight, _ = strconv.Atoi(out.Attributes["ApproximateNumberOfMessagesNotVisible"])
	return visible, inFlight
}

// lockedBuffer collects a child's output for error messages.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 64<<10 {
		return len(p), nil
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
