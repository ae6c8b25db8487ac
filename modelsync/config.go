package modelsync

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tfgate/tfgate/modelsync/event"
	"github.com/tfgate/tfgate/modelsync/extract"
)

// Modes.
const (
	// ModeServing publishes whole versions into a TF Serving model base path.
	ModeServing = "serving"
	// ModeGateway publishes only Include (assets/, assets.extra/) of each version into a
	// gateway's preprocessing spec directory.
	ModeGateway = "gateway"
)

// Duration is a time.Duration that decodes from JSON strings like "20s".
type Duration time.Duration

// UnmarshalJSON accepts a Go duration string or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		*d = Duration(v)
		return nil
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("duration %s: want a string like \"20s\"", b)
	}
	*d = Duration(n)
	return nil
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// Config is the sidecar's configuration. Start from DefaultConfig.
type Config struct {
	// Mode is "serving" or "gateway". Default "serving".
	Mode string `json:"mode"`
	// BasePath is the TF Serving model base path (serving) or the gateway's spec
	// directory (gateway); versions go to <BasePath>/<model>/<version>. Required.
	BasePath string `json:"base_path"`
	// StateDir holds the journal. Default <BasePath>/.modelsync.
	StateDir string `json:"state_dir"`

	// QueueURL is the SQS queue to long-poll. Empty: no queue (catch-up only).
	QueueURL string `json:"queue_url"`
	// SQSEndpoint overrides the SQS endpoint (fauxqs, LocalStack). Default: AWS's.
	SQSEndpoint string `json:"sqs_endpoint"`
	// Bucket is the models bucket. Required for catch-up; when set, notifications for
	// other buckets are ignored. Default "".
	Bucket string `json:"bucket"`
	// Prefix is the key prefix models live under. Default "".
	Prefix string `json:"prefix"`
	// Layouts map keys to model versions. Default DefaultLayouts.
	Layouts []string `json:"layouts"`
	// S3Endpoint overrides the S3 endpoint (MinIO, gofakes3). Default: AWS's.
	S3Endpoint string `json:"s3_endpoint"`
	// S3PathStyle uses path-style addressing (S3-compatible stores). Default false.
	S3PathStyle bool `json:"s3_path_style"`
	// Region is the AWS region. Default "us-east-1" when AWS_REGION is unset.
	Region string `json:"region"`

	// Concurrency is how many models are fetched and extracted at once. Default 8.
	Concurrency int `json:"concurrency"`
	// MaxInFlight is how many notifications (and catch-up jobs) are held at once.
	// Default 64.
	MaxInFlight int `json:"max_in_flight"`
	// Receivers is how many long-poll loops run. Default 2.
	Receivers int `json:"receivers"`
	// ReceiveWait is the SQS long-poll wait. Default 20s (SQS's maximum).
	ReceiveWait Duration `json:"receive_wait"`
	// VisibilityTimeout is how long a received message stays invisible; a heartbeat
	// extends it every third of this while the work runs. Default 60s.
	VisibilityTimeout Duration `json:"visibility_timeout"`
	// RetryDelay is how soon a notification that failed transiently becomes visible
	// again. Default 10s.
	RetryDelay Duration `json:"retry_delay"`
	// ShutdownGrace is how long in-flight work may finish after shutdown begins before it
	// is abandoned (and its messages made visible again). Default 10s.
	ShutdownGrace Duration `json:"shutdown_grace"`
	// MaxMessageBytes bounds a notification body. Default 256 KiB.
	MaxMessageBytes int `json:"max_message_bytes"`
	// MaxRecordsPerMessage is how many records of one notification are read (S3 sends
	// one); the rest are journaled as one rejected summary. Default 100.
	MaxRecordsPerMessage int `json:"max_records_per_message"`
	// RememberRejected is how many rejected objects, by (key, ETag), are remembered so
	// that catch-up and redeliveries do not download an unchanged one again; 0
	// remembers none. Default 10000.
	RememberRejected int `json:"remember_rejected"`
	// MaxObjectBytes bounds a model archive's compressed size. Default 8 GiB.
	MaxObjectBytes int64 `json:"max_object_bytes"`

	// FetchAttempts is how many times one download is retried or resumed (with a
	// Range request from where it stopped) before the attempt fails. Default 6.
	FetchAttempts int `json:"fetch_attempts"`
	// FetchBackoff is the first retry delay, doubling up to FetchBackoffMax.
	// Defaults 200ms and 10s.
	FetchBackoff    Duration `json:"fetch_backoff"`
	FetchBackoffMax Duration `json:"fetch_backoff_max"`

	// Limits bound each archive. Defaults: extract.Limits defaults.
	Limits extract.Limits `json:"limits"`
	// Include lists the top-level directories extracted. Default: all in serving mode,
	// ["assets", "assets.extra"] in gateway mode.
	Include []string `json:"include"`
	// Gzip is "klauspost" or "std". Default "klauspost" (faster; see BENCHMARKS in
	// scripts/bench-modelsync.sh).
	Gzip string `json:"gzip"`
	// NoFsync skips fsyncs (benchmarks only: loses crash safety). Default false.
	NoFsync bool `json:"no_fsync"`

	// Retain keeps the newest Retain versions of each model; 0 keeps all. Default 0.
	Retain int `json:"retain"`
	// Pinned lists "model/version" never removed by retention. Default none.
	Pinned []string `json:"pinned"`
	// PinnedFile names a file of "model/version" lines (# comments), re-read on each
	// retention pass. Default "".
	PinnedFile string `json:"pinned_file"`

	// CatchUp lists the bucket at startup and fetches missing versions. Default true.
	CatchUp bool `json:"catch_up"`
	// CatchUpInterval repeats catch-up; 0: startup only. Default 10m.
	CatchUpInterval Duration `json:"catch_up_interval"`
	// CatchUpVersions is how many of each model's newest versions catch-up ensures are
	// present. Default 1 (Retain when Retain is larger).
	CatchUpVersions int `json:"catch_up_versions"`

	// TFServingAddr is the TF Serving gRPC address for HandleReloadConfigRequest when a
	// new model appears. Empty: no reloads. Default "".
	TFServingAddr string `json:"tfserving_addr"`
	// ModelConfigFile is TF Serving's --model_config_file, rewritten when a model is
	// added. Required with TFServingAddr.
	ModelConfigFile string `json:"model_config_file"`
	// ReloadTimeout bounds one reload RPC (it returns when the model is AVAILABLE).
	// Default 2m.
	ReloadTimeout Duration `json:"reload_timeout"`

	// JournalMaxBytes rotates the journal. Default 64 MiB.
	JournalMaxBytes int64 `json:"journal_max_bytes"`
	// JournalFiles is how many rotated journals are kept. Default 8.
	JournalFiles int `json:"journal_files"`

	// Placement, when enabled, makes the base path hold exactly this host's
	// assignment from Consul KV (package placement) instead of every model in the
	// bucket. See PlacementConfig.
	Placement PlacementConfig `json:"placement"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Mode:                 ModeServing,
		Layouts:              append([]string(nil), DefaultLayouts...),
		Concurrency:          8,
		MaxInFlight:          64,
		Receivers:            2,
		ReceiveWait:          Duration(20 * time.Second),
		VisibilityTimeout:    Duration(60 * time.Second),
		RetryDelay:           Duration(10 * time.Second),
		ShutdownGrace:        Duration(10 * time.Second),
		MaxMessageBytes:      event.DefaultMaxBodyBytes,
		MaxRecordsPerMessage: event.DefaultMaxRecords,
		RememberRejected:     10000,
		MaxObjectBytes:       8 << 30,
		FetchAttempts:        6,
		FetchBackoff:         Duration(200 * time.Millisecond),
		FetchBackoffMax:      Duration(10 * time.Second),
		Limits:               extract.Limits{}.WithDefaults(),
		Gzip:                 "klauspost",
		CatchUp:              true,
		CatchUpInterval:      Duration(10 * time.Minute),
		CatchUpVersions:      1,
		ReloadTimeout:        Duration(2 * time.Minute),
		JournalMaxBytes:      64 << 20,
		JournalFiles:         8,
		Placement:            DefaultPlacementConfig(),
	}
}

// LoadConfig decodes a JSON file over the defaults, rejecting unknown fields.
func LoadConfig(path string) (Config, error) {
	cfg := DefaultConfig()
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// withDerived fills defaults that depend on other fields.
func (c Config) withDerived() Config {
	if c.StateDir == "" && c.BasePath != "" {
		c.StateDir = filepath.Join(c.BasePath, ".modelsync")
	}
	if c.Mode == ModeGateway && c.Include == nil {
		c.Include = []string{"assets", "assets.extra"}
	}
	c.Limits = c.Limits.WithDefaults()
	return c
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	switch c.Mode {
	case ModeServing, ModeGateway:
	default:
		add("mode %q: want %q or %q", c.Mode, ModeServing, ModeGateway)
	}
	if c.BasePath == "" {
		add("base_path is required")
	}
	if c.QueueURL == "" && !c.CatchUp && !c.Placement.Enabled {
		add("queue_url is required unless catch_up or placement is on")
	}
	if c.CatchUp && c.Bucket == "" {
		add("bucket is required with catch_up")
	}
	if _, err := NewLayout(c.Prefix, c.Layouts); err != nil {
		add("layouts: %v", err)
	}
	pos := func(name string, v int64) {
		if v <= 0 {
			add("%s must be positive, got %d", name, v)
		}
	}
	pos("concurrency", int64(c.Concurrency))
	pos("max_in_flight", int64(c.MaxInFlight))
	pos("receivers", int64(c.Receivers))
	pos("max_message_bytes", int64(c.MaxMessageBytes))
	pos("max_records_per_message", int64(c.MaxRecordsPerMessage))
	if c.RememberRejected < 0 {
		add("remember_rejected must not be negative, got %d", c.RememberRejected)
	}
	pos("max_object_bytes", c.MaxObjectBytes)
	pos("fetch_attempts", int64(c.FetchAttempts))
	pos("visibility_timeout", int64(c.VisibilityTimeout))
	pos("fetch_backoff", int64(c.FetchBackoff))
	if c.FetchBackoffMax < c.FetchBackoff {
		add("fetch_backoff_max %v is below fetch_backoff %v", time.Duration(c.FetchBackoffMax), time.Duration(c.FetchBackoff))
	}
	if c.ReceiveWait < 0 || c.ReceiveWait > Duration(20*time.Second) {
		add("receive_wait %v: want 0 to 20s (SQS's limit)", time.Duration(c.ReceiveWait))
	}
	if c.VisibilityTimeout > 0 && c.VisibilityTimeout < Duration(3*time.Second) {
		add("visibility_timeout %v: want at least 3s so the heartbeat can keep up", time.Duration(c.VisibilityTimeout))
	}
	if c.VisibilityTimeout > Duration(12*time.Hour) {
		add("visibility_timeout %v: SQS allows at most 12h", time.Duration(c.VisibilityTimeout))
	}
	if c.RetryDelay < 0 || c.RetryDelay > Duration(12*time.Hour) {
		add("retry_delay %v: want 0 to 12h", time.Duration(c.RetryDelay))
	}
	if c.ShutdownGrace < 0 {
		add("shutdown_grace %v is negative", time.Duration(c.ShutdownGrace))
	}
	if err := c.Limits.Validate(); err != nil {
		add("limits: %v", err)
	}
	if _, err := extract.DecompressorByName(c.Gzip); err != nil {
		add("%v", err)
	}
	if c.Retain < 0 {
		add("retain %d is negative", c.Retain)
	}
	if _, err := parsePins(c.Pinned); err != nil {
		add("pinned: %v", err)
	}
	if c.CatchUpInterval < 0 {
		add("catch_up_interval %v is negative", time.Duration(c.CatchUpInterval))
	}
	if c.CatchUpVersions <= 0 {
		add("catch_up_versions must be positive, got %d", c.CatchUpVersions)
	}
	if c.Retain > 0 && c.CatchUpVersions > c.Retain {
		add("catch_up_versions %d exceeds retain %d: catch-up would fetch versions retention removes", c.CatchUpVersions, c.Retain)
	}
	if c.TFServingAddr != "" {
		if c.Mode == ModeGateway {
			add("tfserving_addr is for serving mode; gateway mode has no TF Serving")
		}
		if c.ModelConfigFile == "" {
			add("model_config_file is required with tfserving_addr")
		}
		pos("reload_timeout", int64(c.ReloadTimeout))
	}
	errs = append(errs, c.Placement.validate(c)...)
	for _, in := range c.Include {
		if in == "" || strings.Contains(strings.Trim(in, "/"), "/") || strings.Contains(in, "..") {
			add("include %q: want a top-level directory name like assets", in)
		}
	}
	return errors.Join(errs...)
}

// pin is a model version retention must keep.
type pin struct {
	model   string
	version int64
}

func parsePins(lines []string) (map[pin]bool, error) {
	out := map[pin]bool{}
	var errs []error
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if i := strings.IndexByte(l, '#'); i >= 0 {
			l = strings.TrimSpace(l[:i])
		}
		if l == "" {
			continue
		}
		m, v, ok := strings.Cut(l, "/")
		n, err := strconv.ParseInt(v, 10, 64)
		if !ok || m == "" || err != nil || n < 0 {
			errs = append(errs, fmt.Errorf("%q: want model/version", l))
			continue
		}
		out[pin{m, n}] = true
	}
	return out, errors.Join(errs...)
}

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
