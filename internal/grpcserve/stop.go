// Package grpcserve holds what tfgate's gRPC servers share around grpc.Server.
package grpcserve

import (
	"time"

	"google.golang.org/grpc"
)

// Stop stops s gracefully: it refuses new calls and waits for those in flight. If
// they have not finished after timeout it stops s hard, cancelling them. It returns
// once s is stopped; graceful reports whether every call finished on its own.
func Stop(s *grpc.Server, timeout time.Duration) (graceful bool) {
	done := make(chan struct{})
	go func() {
		s.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		s.Stop()
		<-done
		return false
	}
}
