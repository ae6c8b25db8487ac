package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/tfgate/tfgate/loadtest/passthrough"
)

// proxyCmd runs a bare grpc-go pass-through proxy in front of one backend until
// SIGINT/SIGTERM: the baseline make bench measures the gateway against.
func proxyCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("loadtest proxy", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to serve on")
	backend := fs.String("backend", "", "backend host:port, plaintext gRPC (required)")
	drain := fs.Duration("drain", 5*time.Second, "on SIGTERM, how long calls in flight may take to finish")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *backend == "" {
		return errors.New("--backend is required")
	}
	p, err := passthrough.New(*backend)
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	fmt.Fprintf(os.Stderr, "loadtest proxy: %s -> %s\n", lis.Addr(), *backend)
	return p.Serve(ctx, lis, *drain)
}
