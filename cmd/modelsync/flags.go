package main

import (
	"flag"
	"strings"

	"github.com/tfgate/tfgate/modelsync"
)

// The flags of modelsync run: one per modelsync.Config field.

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

// bindFlags registers a flag for each Config field, writing into c (whose current
// values are the flags' defaults).
func bindFlags(fs *flag.FlagSet, c *modelsync.Config) {
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

// bindPlacementFlags registers placement mode's flags, writing into c.Placement.
func bindPlacementFlags(fs *flag.FlagSet, c *modelsync.Config) {
	p := &c.Placement
	fs.BoolVar(&p.Enabled, "placement", p.Enabled, "placement mode: sync exactly this host's assignment from Consul KV (CONSUL_HTTP_ADDR)")
	fs.StringVar(&p.Pool, "placement-pool", p.Pool, "the host's pool in the assignment")
	fs.StringVar(&p.Host, "placement-host", p.Host, "the host's ID in the assignment (its Consul service ID); required with -placement")
	fs.StringVar(&p.KVPrefix, "placement-kv-prefix", p.KVPrefix, "placement root in Consul KV")
	fs.Int64Var(&p.CacheBytes, "placement-cache-bytes", p.CacheBytes, "disk bytes of unassigned versions kept for a quick reload")
	fs.Var(&p.PollInterval, "placement-poll-interval", "how often TF Serving is polled while versions load or unload")
	fs.Var(&p.StatusInterval, "placement-status-interval", "full resync and status heartbeat interval")
	fs.Var(&p.FailureBackoff, "placement-failure-backoff", "how long a failed load is reported, keeping the version off this host")
	fs.Var(&p.UnloadDelay, "placement-unload-delay", "how long a version taken off this host stays loaded (drains) before it is unloaded, so gateways stop routing it first; cut short while an assigned version is loading (its memory may be needed); 0 unloads at once")
}
