package hosts

import "errors"

// Sentinel errors. Errors returned by the Manager wrap one of these (or are the
// backend's own gRPC status, wrapped with the host), so callers match with errors.Is;
// the gateway maps them to gRPC codes in its one mapping (gateway.Code).
var (
	// ErrVersionUnavailable: no host in the pools searched reports the version
	// AVAILABLE. The message names the model, version and pools. Maps to NOT_FOUND.
	ErrVersionUnavailable = errors.New("version not available on any host")
	// ErrNoHost: the version is AVAILABLE somewhere, but every such host is ejected
	// or gone, or was already tried. Maps to UNAVAILABLE.
	ErrNoHost = errors.New("no eligible host")
	// ErrNoVersion: the request has no explicit model_spec.version (the gateway
	// must always pin one). Maps to INTERNAL: it is the gateway's bug.
	ErrNoVersion = errors.New("backend request without an explicit version")
	// ErrUnknownPool: a pool name not in the hosts config. Maps to INTERNAL.
	ErrUnknownPool = errors.New("unknown pool")
	// ErrClosed: the manager has stopped. Maps to UNAVAILABLE.
	ErrClosed = errors.New("hosts manager stopped")
)

// HostError is a call that failed on one host. Its text names the host, for logs and
// spans; Err is what the host answered, which is all a caller should see (the gateway
// keeps internal addresses out of caller-facing messages).
type HostError struct {
	Addr string
	Err  error
}

func (e *HostError) Error() string { return "host " + e.Addr + ": " + e.Err.Error() }
func (e *HostError) Unwrap() error { return e.Err }
