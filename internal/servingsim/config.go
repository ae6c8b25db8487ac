package servingsim

import (
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"

	"github.com/tfgate/tfgate/internal/servingsim/model"
)

// Config configures a server. Field names follow TF Serving's flags; Flags binds them.
type Config struct {
	// Port is the gRPC port (--port). Default 8500; 0 picks a free port.
	Port int
	// Host is the address to bind (not a TF Serving flag). Default "127.0.0.1".
	Host string
	// RESTAPIPort serves REST :predict and Prometheus metrics when > 0
	// (--rest_api_port). Default 0: off.
	RESTAPIPort int
	// ModelName and ModelBasePath configure a single model (--model_name, default
	// "default"; --model_base_path). Exclusive with ModelConfigFile.
	ModelName     string
	ModelBasePath string
	// ModelConfigFile is a text-format ModelServerConfig (--model_config_file).
	ModelConfigFile string
	// ModelConfigFilePollWait re-reads ModelConfigFile this often and applies changes
	// (--model_config_file_poll_wait_seconds). Default 0: read once.
	ModelConfigFilePollWait time.Duration
	// FileSystemPollWait is how often each model's base path is polled
	// (--file_system_poll_wait_seconds). Default 1 s; 0 polls once; negative never.
	FileSystemPollWait time.Duration
	// EnableBatching turns on server-side batching (--enable_batching). Default false.
	EnableBatching bool
	// BatchingParametersFile is a text-format BatchingParameters
	// (--batching_parameters_file). Default "": TF Serving's defaults.
	BatchingParametersFile string
	// AllowVersionLabelsForUnavailableModels lets a label name a version that is not
	// yet AVAILABLE (--allow_version_labels_for_unavailable_models). Default false.
	AllowVersionLabelsForUnavailableModels bool
	// GRPCMaxThreads bounds concurrently handled RPCs (--grpc_max_threads); the rest
	// wait. Default 0: unbounded.
	GRPCMaxThreads int
	// GRPCChannelArguments is TF Serving's --grpc_channel_arguments: comma-separated
	// key=value; grpc.max_receive_message_length and grpc.max_send_message_length
	// are honoured, others are logged and ignored. Default "".
	GRPCChannelArguments string
	// MaxReceiveMessageSize and MaxSendMessageSize bound gRPC messages. Default
	// math.MaxInt32 (TF Serving accepts up to 2 GiB).
	MaxReceiveMessageSize int
	MaxSendMessageSize    int
	// MaxNumLoadRetries retries a failed version load (--max_num_load_retries).
	// Default 0 (TF Serving: 5); LoadRetryInterval (--load_retry_interval_micros)
	// default 1 minute.
	MaxNumLoadRetries int
	LoadRetryInterval time.Duration

	// Simulated compute cost overrides (not TF Serving flags). Negative means "use
	// each model's servingsim.json". Defaults -1.
	CostPerCall time.Duration // --sim_cost_per_call
	CostPerRow  time.Duration // --sim_cost_per_row
	// MaxConcurrentExecutions bounds executions across all models on this server,
	// the shape of one GPU (--sim_max_concurrent_executions). Default 0: unbounded.
	MaxConcurrentExecutions int
	// ModelMaxConcurrent, when >= 0, replaces every model's cost.max_concurrent
	// (--sim_model_max_concurrent). Default -1.
	ModelMaxConcurrent int

	// ModelMemoryLimitBytes is the memory models may hold together
	// (--model_memory_limit_bytes; TF Serving's ServerCore option
	// total_model_memory_limit_bytes, which its main does not expose). A load that
	// would exceed it fails with RESOURCE_EXHAUSTED and ends in END, as TF Serving's
	// resource tracker refuses it. Each version counts its servingsim.json
	// resident_bytes. Default 0: unlimited.
	ModelMemoryLimitBytes int64
	// LoadBytesPerSecond makes a load take resident_bytes / this long, in LOADING
	// (--sim_load_bytes_per_second). Default 0: loads are instant.
	LoadBytesPerSecond int64
	// NumLoadThreads bounds loads in progress at once across the server
	// (--num_load_threads). Default 0: unbounded (TF Serving's 0 means serial in
	// its manager thread).
	NumLoadThreads int

	// IgnoredFlags lists TF Serving flags given but not simulated (logged at start).
	IgnoredFlags []string

	// Logger receives load/unload events and errors. nil discards.
	Logger *slog.Logger

	// ServerOptions are added to the gRPC server's (an otelgrpc stats handler, so
	// the trace context a caller sends shows up as server spans). Interceptors
	// must be chained (grpc.ChainUnaryInterceptor). Default: none.
	ServerOptions []grpc.ServerOption
}

// DefaultConfig returns the defaults stated on each field.
func DefaultConfig() Config {
	return Config{
		Port: 8500, Host: "127.0.0.1", ModelName: "default",
		FileSystemPollWait:    time.Second,
		MaxReceiveMessageSize: math.MaxInt32, MaxSendMessageSize: math.MaxInt32,
		LoadRetryInterval: time.Minute,
		CostPerCall:       -1, CostPerRow: -1, ModelMaxConcurrent: -1,
	}
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Port < 0 || c.Port > 65535 {
		bad("--port %d is not a port number", c.Port)
	}
	if c.RESTAPIPort < 0 || c.RESTAPIPort > 65535 {
		bad("--rest_api_port %d is not a port number", c.RESTAPIPort)
	}
	if c.ModelConfigFile != "" && c.ModelBasePath != "" {
		bad("--model_config_file and --model_base_path are exclusive: use one")
	}
	if c.ModelConfigFile == "" && c.ModelBasePath == "" {
		bad("either --model_config_file or --model_base_path must be set")
	}
	if c.ModelBasePath != "" && c.ModelName == "" {
		bad("--model_name is empty")
	}
	if c.ModelConfigFilePollWait < 0 {
		bad("--model_config_file_poll_wait_seconds must not be negative")
	}
	if c.GRPCMaxThreads < 0 || c.MaxConcurrentExecutions < 0 || c.MaxNumLoadRetries < 0 {
		bad("--grpc_max_threads, --sim_max_concurrent_executions and --max_num_load_retries must not be negative")
	}
	if c.ModelMemoryLimitBytes < 0 || c.LoadBytesPerSecond < 0 || c.NumLoadThreads < 0 {
		bad("--model_memory_limit_bytes, --sim_load_bytes_per_second and --num_load_threads must not be negative")
	}
	if c.MaxReceiveMessageSize <= 0 || c.MaxSendMessageSize <= 0 {
		bad("message size limits must be positive")
	}
	if _, _, err := parseChannelArgs(c.GRPCChannelArguments); err != nil {
		bad("--grpc_channel_arguments: %v", err)
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrConfig, model.JoinErrors(errs))
}

// parseChannelArgs extracts the message size arguments (0 when absent) and returns
// the keys it ignores.
func parseChannelArgs(s string) (recv, send int, err error) {
	if strings.TrimSpace(s) == "" {
		return 0, 0, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return 0, 0, fmt.Errorf("%q is not key=value", kv)
		}
		switch k {
		case "grpc.max_receive_message_length", "grpc.max_send_message_length":
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 || n > math.MaxInt32 {
				return 0, 0, fmt.Errorf("%s=%q is not a positive 32-bit size", k, v)
			}
			if k == "grpc.max_receive_message_length" {
				recv = n
			} else {
				send = n
			}
		}
	}
	return recv, send, nil
}

// Flags registers TF Serving's flag names on fs, writing into c (which should hold
// DefaultConfig). Durations in seconds or microseconds follow TF Serving's units.
func (c *Config) Flags(fs *flag.FlagSet) {
	fs.IntVar(&c.Port, "port", c.Port, "gRPC port")
	fs.StringVar(&c.Host, "host", c.Host, "address to bind (servingsim only)")
	fs.IntVar(&c.RESTAPIPort, "rest_api_port", c.RESTAPIPort, "REST port (0: off)")
	fs.StringVar(&c.ModelName, "model_name", c.ModelName, "name of the single model")
	fs.StringVar(&c.ModelBasePath, "model_base_path", c.ModelBasePath, "base path of the single model")
	fs.StringVar(&c.ModelConfigFile, "model_config_file", c.ModelConfigFile, "text-format ModelServerConfig")
	seconds(fs, &c.ModelConfigFilePollWait, "model_config_file_poll_wait_seconds", "re-read --model_config_file this often (0: once)")
	seconds(fs, &c.FileSystemPollWait, "file_system_poll_wait_seconds", "poll model base paths this often (0: once, <0: never)")
	fs.BoolVar(&c.EnableBatching, "enable_batching", c.EnableBatching, "server-side batching")
	fs.StringVar(&c.BatchingParametersFile, "batching_parameters_file", c.BatchingParametersFile, "text-format BatchingParameters")
	fs.BoolVar(&c.AllowVersionLabelsForUnavailableModels, "allow_version_labels_for_unavailable_models", c.AllowVersionLabelsForUnavailableModels, "allow labels on versions not yet AVAILABLE")
	fs.IntVar(&c.GRPCMaxThreads, "grpc_max_threads", c.GRPCMaxThreads, "max concurrently handled RPCs (0: unbounded)")
	fs.StringVar(&c.GRPCChannelArguments, "grpc_channel_arguments", c.GRPCChannelArguments, "grpc.max_receive_message_length=N,grpc.max_send_message_length=N")
	fs.IntVar(&c.MaxNumLoadRetries, "max_num_load_retries", c.MaxNumLoadRetries, "retries of a failed load")
	micros(fs, &c.LoadRetryInterval, "load_retry_interval_micros", "interval between load retries")
	fs.DurationVar(&c.CostPerCall, "sim_cost_per_call", c.CostPerCall, "simulated cost per execution, overriding servingsim.json (<0: use the spec)")
	fs.DurationVar(&c.CostPerRow, "sim_cost_per_row", c.CostPerRow, "simulated cost per batch row, overriding servingsim.json (<0: use the spec)")
	fs.IntVar(&c.MaxConcurrentExecutions, "sim_max_concurrent_executions", c.MaxConcurrentExecutions, "executions at once across the server (0: unbounded)")
	fs.IntVar(&c.ModelMaxConcurrent, "sim_model_max_concurrent", c.ModelMaxConcurrent, "executions at once per model version, overriding servingsim.json (<0: use the spec)")
	fs.Int64Var(&c.ModelMemoryLimitBytes, "model_memory_limit_bytes", c.ModelMemoryLimitBytes, "memory all loaded models may hold, by their servingsim.json resident_bytes (0: unlimited)")
	fs.Int64Var(&c.LoadBytesPerSecond, "sim_load_bytes_per_second", c.LoadBytesPerSecond, "simulated load speed: a load takes resident_bytes / this (0: instant)")
	fs.IntVar(&c.NumLoadThreads, "num_load_threads", c.NumLoadThreads, "loads in progress at once (0: unbounded)")
	for _, name := range IgnoredTFServingFlags {
		fs.Var(&ignoredFlag{name: name, c: c}, name, "TF Serving flag, accepted and ignored by servingsim")
	}
}

// IgnoredTFServingFlags are TF Serving flags that servingsim accepts so that a TF
// Serving command line runs unchanged, and ignores (each use is logged).
var IgnoredTFServingFlags = []string{
	"enable_model_warmup", "monitoring_config_file", "rest_api_num_threads", "rest_api_timeout_in_ms",
	"tensorflow_intra_op_parallelism", "tensorflow_inter_op_parallelism", "tensorflow_session_parallelism",
	"num_unload_threads", "flush_filesystem_caches", "per_process_gpu_memory_fraction",
	"saved_model_tags", "enable_signature_method_name_check", "xla_cpu_compilation_enabled",
	"platform_config_file", "ssl_config_file", "grpc_socket_path", "rest_api_enable_cors_support",
}

// ignoredFlag accepts any value (and the bare boolean form) and records its use.
type ignoredFlag struct {
	name string
	c    *Config
}

func (f *ignoredFlag) String() string { return "" }
func (f *ignoredFlag) IsBoolFlag() bool {
	return f.name == "enable_model_warmup" || f.name == "flush_filesystem_caches" || f.name == "enable_signature_method_name_check" || f.name == "xla_cpu_compilation_enabled" || f.name == "rest_api_enable_cors_support"
}
func (f *ignoredFlag) Set(v string) error {
	f.c.IgnoredFlags = append(f.c.IgnoredFlags, f.name+"="+v)
	return nil
}

type durFlag struct {
	d    *time.Duration
	unit time.Duration
}

func (f durFlag) String() string {
	if f.d == nil {
		return "0"
	}
	return strconv.FormatFloat(float64(*f.d)/float64(f.unit), 'g', -1, 64)
}

func (f durFlag) Set(s string) error {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || math.Abs(v*float64(f.unit)) > math.MaxInt64/2 {
		return fmt.Errorf("%q is not a number", s)
	}
	*f.d = time.Duration(v * float64(f.unit))
	return nil
}

func seconds(fs *flag.FlagSet, d *time.Duration, name, usage string) {
	fs.Var(durFlag{d, time.Second}, name, usage+" (seconds)")
}

func micros(fs *flag.FlagSet, d *time.Duration, name, usage string) {
	fs.Var(durFlag{d, time.Microsecond}, name, usage+" (microseconds)")
}

// readFileLimited reads a config file of at most 64 MiB.
func readFileLimited(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Size() > 64<<20 {
		return nil, fmt.Errorf("%s is %d bytes, at most 64 MiB", path, fi.Size())
	}
	return os.ReadFile(path)
}
