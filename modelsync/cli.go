package modelsync

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tfgate/tfgate/modelsync/journal"
	"github.com/tfgate/tfgate/modelsync/reload"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

// Set parses a Go duration ("20s"), for flags.
func (d *Duration) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

func (d *Duration) String() string {
	if d == nil {
		return "0s"
	}
	return time.Duration(*d).String()
}

type listFlag struct{ p *[]string }

func (l listFlag) String() string {
	if l.p == nil {
		return ""
	}
	return strings.Join(*l.p, ",")
}

func (l listFlag) Set(s string) error {
	*l.p = nil
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			*l.p = append(*l.p, x)
		}
	}
	return nil
}

// BindFlags registers a flag for each Config field, writing into c (whose current
// values are the flags' defaults).
func (c *Config) BindFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Mode, "mode", c.Mode, "serving (whole versions into a TF Serving base path) or gateway (assets only into a spec directory)")
	fs.StringVar(&c.BasePath, "base-path", c.BasePath, "model base path (serving) or spec directory (gateway); required")
	fs.StringVar(&c.StateDir, "state-dir", c.StateDir, "journal directory (default <base-path>/.modelsync)")
	fs.StringVar(&c.QueueURL, "queue-url", c.QueueURL, "SQS queue URL to long-poll")
	fs.StringVar(&c.SQSEndpoint, "sqs-endpoint", c.SQSEndpoint, "SQS endpoint override (fauxqs, LocalStack)")
	fs.StringVar(&c.Bucket, "bucket", c.Bucket, "models bucket (required for catch-up; other buckets are ignored)")
	fs.StringVar(&c.Prefix, "prefix", c.Prefix, "key prefix models live under")
	fs.Var(listFlag{&c.Layouts}, "layouts", "comma-separated key layouts with {prefix}, {model}, {version}")
	fs.StringVar(&c.S3Endpoint, "s3-endpoint", c.S3Endpoint, "S3 endpoint override (MinIO, gofakes3)")
	fs.BoolVar(&c.S3PathStyle, "s3-path-style", c.S3PathStyle, "path-style S3 addressing")
	fs.StringVar(&c.Region, "region", c.Region, "AWS region (default $AWS_REGION or us-east-1)")
	fs.IntVar(&c.Concurrency, "concurrency", c.Concurrency, "versions fetched and extracted at once")
	fs.IntVar(&c.MaxInFlight, "max-in-flight", c.MaxInFlight, "notifications and catch-up jobs held at once")
	fs.IntVar(&c.Receivers, "receivers", c.Receivers, "concurrent SQS long-poll loops")
	fs.Var(&c.ReceiveWait, "receive-wait", "SQS long-poll wait (at most 20s)")
	fs.Var(&c.VisibilityTimeout, "visibility-timeout", "visibility of received messages; extended every third of it while working")
	fs.Var(&c.RetryDelay, "retry-delay", "how soon a transiently failed notification is retried")
	fs.Var(&c.ShutdownGrace, "shutdown-grace", "how long in-flight work may finish at shutdown")
	fs.IntVar(&c.MaxMessageBytes, "max-message-bytes", c.MaxMessageBytes, "largest notification body")
	fs.Int64Var(&c.MaxObjectBytes, "max-object-bytes", c.MaxObjectBytes, "largest model archive (compressed)")
	fs.IntVar(&c.FetchAttempts, "fetch-attempts", c.FetchAttempts, "S3 read attempts (retries and range resumes) per download")
	fs.Var(&c.FetchBackoff, "fetch-backoff", "first S3 retry delay (doubles)")
	fs.Var(&c.FetchBackoffMax, "fetch-backoff-max", "largest S3 retry delay")
	fs.IntVar(&c.Limits.MaxEntries, "max-entries", c.Limits.MaxEntries, "most entries in an archive")
	fs.Int64Var(&c.Limits.MaxEntryBytes, "max-entry-bytes", c.Limits.MaxEntryBytes, "largest file in an archive")
	fs.Int64Var(&c.Limits.MaxTotalBytes, "max-total-bytes", c.Limits.MaxTotalBytes, "largest total of an archive's files")
	fs.Var(listFlag{&c.Include}, "include", "comma-separated top-level directories to extract (gateway default: assets,assets.extra)")
	fs.StringVar(&c.Gzip, "gzip", c.Gzip, "gzip decoder: klauspost or std")
	fs.BoolVar(&c.NoFsync, "no-fsync", c.NoFsync, "skip fsyncs (benchmarks only: not crash safe)")
	fs.IntVar(&c.Retain, "retain", c.Retain, "newest versions kept per model; 0 keeps all")
	fs.Var(listFlag{&c.Pinned}, "pinned", "comma-separated model/version never removed by retention")
	fs.StringVar(&c.PinnedFile, "pinned-file", c.PinnedFile, "file of model/version lines never removed by retention")
	fs.BoolVar(&c.CatchUp, "catch-up", c.CatchUp, "list the bucket at startup and fetch missing newest versions")
	fs.Var(&c.CatchUpInterval, "catch-up-interval", "repeat catch-up this often; 0: startup only")
	fs.IntVar(&c.CatchUpVersions, "catch-up-versions", c.CatchUpVersions, "newest versions per model catch-up ensures")
	fs.StringVar(&c.TFServingAddr, "tfserving-addr", c.TFServingAddr, "TF Serving gRPC address for HandleReloadConfigRequest on new models")
	fs.StringVar(&c.ModelConfigFile, "model-config-file", c.ModelConfigFile, "TF Serving --model_config_file to rewrite when a model is added")
	fs.Var(&c.ReloadTimeout, "reload-timeout", "bound on one reload RPC")
	fs.Int64Var(&c.JournalMaxBytes, "journal-max-bytes", c.JournalMaxBytes, "rotate the journal past this size")
	fs.IntVar(&c.JournalFiles, "journal-files", c.JournalFiles, "rotated journals kept")
}

// AWSClients builds the S3 and SQS clients a Config names, with the SDK's default
// credential chain.
func AWSClients(ctx context.Context, region, s3Endpoint string, pathStyle bool, sqsEndpoint string) (*s3.Client, *sqs.Client, error) {
	if region == "" {
		region = os.Getenv("AWS_REGION")
	}
	if region == "" {
		region = "us-east-1"
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(region))
	if err != nil {
		return nil, nil, fmt.Errorf("AWS config: %w", err)
	}
	s3c := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if s3Endpoint != "" {
			o.BaseEndpoint = aws.String(s3Endpoint)
			// S3-compatible stores may not know the SDK's default CRC trailers.
			o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
			o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		}
		o.UsePathStyle = pathStyle
	})
	sqsc := sqs.NewFromConfig(awsCfg, func(o *sqs.Options) {
		if sqsEndpoint != "" {
			o.BaseEndpoint = aws.String(sqsEndpoint)
		}
	})
	return s3c, sqsc, nil
}

// SNSClient builds an SNS client (for `modelsync publish -topic`), with the SDK's default
// credential chain; endpoint overrides AWS's (fauxqs serves SNS on its SQS port).
func SNSClient(ctx context.Context, region, endpoint string) (*sns.Client, error) {
	if region == "" {
		region = os.Getenv("AWS_REGION")
	}
	if region == "" {
		region = "us-east-1"
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(region))
	if err != nil {
		return nil, fmt.Errorf("AWS config: %w", err)
	}
	return sns.NewFromConfig(awsCfg, func(o *sns.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
	}), nil
}

// NewDeps wires the production dependencies for cfg. close releases them.
func NewDeps(ctx context.Context, cfg Config) (deps Deps, close func(), err error) {
	s3c, sqsc, err := AWSClients(ctx, cfg.Region, cfg.S3Endpoint, cfg.S3PathStyle, cfg.SQSEndpoint)
	if err != nil {
		return Deps{}, nil, err
	}
	deps = Deps{S3: s3c, SQS: sqsc}
	close = func() {}
	if cfg.TFServingAddr != "" {
		conn, err := grpc.NewClient(cfg.TFServingAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return Deps{}, nil, fmt.Errorf("TF Serving address %q: %w", cfg.TFServingAddr, err)
		}
		rl, err := reload.New(servingpb.NewModelServiceClient(conn), cfg.ModelConfigFile, cfg.BasePath)
		if err != nil {
			conn.Close()
			return Deps{}, nil, err
		}
		deps.Reloader = rl
		close = func() { conn.Close() }
	}
	return deps, close, nil
}

// ParseTime reads a history bound: RFC 3339, or a duration meaning that long ago.
func ParseTime(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("time %q: want RFC 3339 (2026-11-24T05:00:00Z) or a duration ago (24h)", s)
	}
	return t, nil
}

// WriteHistory prints journal entries as a table, or as JSON lines.
func WriteHistory(w io.Writer, entries []journal.Entry, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		for _, e := range entries {
			if err := enc.Encode(e); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tMODEL\tVERSION\tOUTCOME\tTRIGGER\tBYTES\tTOTAL_MS\tREASON")
	for _, e := range entries {
		v := ""
		if e.Model != "" {
			v = strconv.FormatInt(e.Version, 10)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%.1f\t%s\n", e.Time.UTC().Format(time.RFC3339), e.Model, v,
			e.Outcome, e.Trigger, e.Bytes, e.PhasesMS["total"], e.Reason)
	}
	return tw.Flush()
}
