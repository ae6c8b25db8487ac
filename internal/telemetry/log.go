package telemetry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// RequestIDHeader is the gRPC metadata key carrying the request id, both from
// the caller and back in the response header.
const RequestIDHeader = "x-request-id"

// maxRequestIDLen bounds a caller-supplied request id.
const maxRequestIDLen = 128

// LogConfig configures [NewLogger].
type LogConfig struct {
	// Format is "json" or "text". Default: "json".
	Format string
	// Level is the minimum level: debug, info, warn, error. Default: info.
	Level string
}

// ParseLevel parses a level name (debug, info, warn, error, case-insensitive).
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if s == "" {
		return slog.LevelInfo, nil
	}
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("%w: log level %q: want debug, info, warn or error", ErrConfig, s)
	}
	return l, nil
}

// NewLogger builds the process logger writing to w. Every record logged with a
// context (InfoContext and friends) gets the context's request_id, trace_id and
// span_id.
func NewLogger(w io.Writer, cfg LogConfig) (*slog.Logger, error) {
	level, err := ParseLevel(cfg.Level)
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	switch strings.ToLower(cfg.Format) {
	case "", "json":
		h = slog.NewJSONHandler(w, opts)
	case "text":
		h = slog.NewTextHandler(w, opts)
	default:
		return nil, fmt.Errorf("%w: log format %q: want json or text", ErrConfig, cfg.Format)
	}
	return slog.New(ContextHandler(h)), nil
}

// ContextHandler wraps h so that records carry the context's request id and
// trace/span ids.
func ContextHandler(h slog.Handler) slog.Handler {
	if _, ok := h.(contextHandler); ok {
		return h
	}
	return contextHandler{h}
}

type contextHandler struct{ slog.Handler }

func (h contextHandler) Handle(ctx context.Context, r slog.Record) error {
	if ctx != nil {
		if id := RequestID(ctx); id != "" {
			r.AddAttrs(slog.String("request_id", id))
		}
		if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
			r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
		}
	}
	return h.Handler.Handle(ctx, r)
}

func (h contextHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return contextHandler{h.Handler.WithAttrs(as)}
}

func (h contextHandler) WithGroup(name string) slog.Handler {
	return contextHandler{h.Handler.WithGroup(name)}
}

type requestIDKey struct{}

// WithRequestID returns ctx carrying id.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// RequestID returns the request id in ctx, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// NewRequestID returns a random 16-byte id in hex.
func NewRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ValidRequestID reports whether a caller-supplied id is acceptable: 1 to 128
// characters of [A-Za-z0-9._:-]. Anything else is replaced by a fresh id so
// that logs cannot be forged or flooded.
func ValidRequestID(id string) bool {
	if id == "" || len(id) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}

// UnaryServerInterceptor gives every RPC a request id: the caller's
// x-request-id when valid, else a new one. The id is put in the context (so
// every log line of the request carries it) and sent back in the response
// header.
func UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx = incomingRequestID(ctx)
		_ = grpc.SetHeader(ctx, metadata.Pairs(RequestIDHeader, RequestID(ctx)))
		return handler(ctx, req)
	}
}

// StreamServerInterceptor is [UnaryServerInterceptor] for streams.
func StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx := incomingRequestID(ss.Context())
		_ = ss.SetHeader(metadata.Pairs(RequestIDHeader, RequestID(ctx)))
		return handler(srv, &idStream{ServerStream: ss, ctx: ctx})
	}
}

type idStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *idStream) Context() context.Context { return s.ctx }

func incomingRequestID(ctx context.Context) context.Context {
	if id := RequestID(ctx); id != "" {
		return ctx
	}
	id := ""
	// ValueFromIncomingContext reads the one key; FromIncomingContext would
	// copy every header of every request.
	if v := metadata.ValueFromIncomingContext(ctx, RequestIDHeader); len(v) > 0 && ValidRequestID(v[0]) {
		id = v[0]
	}
	if id == "" {
		id = NewRequestID()
	}
	return WithRequestID(ctx, id)
}

// UnaryClientInterceptor forwards the context's request id to the server in
// x-request-id metadata (TF Serving ignores it; a tfgate hop logs it).
func UnaryClientInterceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if id := RequestID(ctx); id != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, RequestIDHeader, id)
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}
