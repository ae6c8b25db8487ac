// Package passthrough is the least work a grpc-go proxy can do: every unary call is
// forwarded to one backend as opaque bytes, without decoding, over one grpc-go
// server and one grpc-go client connection.
//
// make bench runs it beside nginx's grpc_pass and the gateway, so the gateway's CPU
// and latency per request can be read against the floor of the stack it is built on
// (grpc-go on both sides) as well as against nginx. It is a measuring instrument,
// not a product proxy: no TLS, no routing, no retries, unary calls only.
package passthrough

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tfgate/tfgate/internal/grpcserve"
)

// MaxMsgSize is the largest message forwarded either way (the gateway's default).
const MaxMsgSize = 64 << 20

// Proxy forwards unary calls to one backend.
type Proxy struct {
	cc  *grpc.ClientConn
	srv *grpc.Server
}

// New returns a Proxy for the backend at addr (host:port, plaintext). It dials
// lazily, like grpc.NewClient.
func New(addr string) (*Proxy, error) {
	// The same transport settings as the gateway's, so that the difference between
	// the two is the gateway's own work: no client-side retries (the gateway retries
	// on another host itself) and handlers on a fixed pool of stream workers.
	cc, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDisableRetry(),
		grpc.WithDefaultCallOptions(
			grpc.ForceCodecV2(rawCodec{}),
			grpc.MaxCallRecvMsgSize(MaxMsgSize),
			grpc.MaxCallSendMsgSize(MaxMsgSize)))
	if err != nil {
		return nil, fmt.Errorf("passthrough: backend %q: %w", addr, err)
	}
	p := &Proxy{cc: cc}
	p.srv = grpc.NewServer(
		grpc.ForceServerCodecV2(rawCodec{}),
		grpc.UnknownServiceHandler(p.forward),
		grpc.MaxRecvMsgSize(MaxMsgSize),
		grpc.MaxSendMsgSize(MaxMsgSize),
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
	)
	return p, nil
}

// Serve accepts calls on lis until ctx is done, then stops gracefully: calls in
// flight finish, for at most drain.
func (p *Proxy) Serve(ctx context.Context, lis net.Listener, drain time.Duration) error {
	defer p.cc.Close()
	errc := make(chan error, 1)
	go func() { errc <- p.srv.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("passthrough: serve: %w", err)
	case <-ctx.Done():
	}
	grpcserve.Stop(p.srv, drain)
	if err := <-errc; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("passthrough: serve: %w", err)
	}
	return nil
}

// forward relays one unary call: request metadata and message to the backend, its
// headers, message, trailers and status back. The caller's deadline and
// cancellation travel with the context.
func (p *Proxy) forward(_ any, st grpc.ServerStream) error {
	method, ok := grpc.MethodFromServerStream(st)
	if !ok {
		return status.Error(codes.Internal, "passthrough: no method on the stream")
	}
	var in []byte
	if err := st.RecvMsg(&in); err != nil {
		return err
	}
	ctx := st.Context()
	if md, ok := metadata.FromIncomingContext(ctx); ok { // a copy: ours to edit
		// Transport-level headers are the client connection's to set.
		for _, k := range []string{":authority", "user-agent", "content-type", "grpc-timeout", "te"} {
			delete(md, k)
		}
		ctx = metadata.NewOutgoingContext(ctx, md)
	}
	var header, trailer metadata.MD
	var resp []byte
	err := p.cc.Invoke(ctx, method, &in, &resp, grpc.Header(&header), grpc.Trailer(&trailer))
	if len(header) > 0 {
		_ = st.SetHeader(header)
	}
	if len(trailer) > 0 {
		st.SetTrailer(trailer)
	}
	if err != nil {
		return err // a status from the backend, or grpc-go's for the transport
	}
	return st.SendMsg(&resp)
}

// rawCodec moves messages as the bytes on the wire. It is registered under the
// name "proto" on this proxy's server and client only (Force*Codec), so the
// content-subtype on the wire is unchanged.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("passthrough: cannot marshal %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(*b)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("passthrough: cannot unmarshal into %T", v)
	}
	*b = data.Materialize()
	return nil
}
