package grpcserve_test

import (
	"context"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/tfgate/tfgate/internal/grpcserve"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serve runs a server whose one method blocks until release is closed or the
// call is cancelled, and returns a client connection to it.
func serve(t *testing.T, release <-chan struct{}, entered chan<- struct{}) (*grpc.Server, *grpc.ClientConn) {
	t.Helper()
	s := grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, st grpc.ServerStream) error {
		entered <- struct{}{}
		select {
		case <-release:
			return nil
		case <-st.Context().Done():
			return status.FromContextError(st.Context().Err()).Err()
		}
	}))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { _ = s.Serve(lis); close(served) }()
	t.Cleanup(func() { s.Stop(); <-served })
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return s, cc
}

// call invokes the blocking method in the background and returns its error channel.
func call(cc *grpc.ClientConn) <-chan error {
	errc := make(chan error, 1)
	go func() {
		st, err := cc.NewStream(context.Background(), &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, "/x.Y/Block")
		if err == nil {
			err = st.CloseSend()
		}
		if err == nil {
			err = st.RecvMsg(new(any))
		}
		errc <- err
	}()
	return errc
}

func TestStopWaitsForCallsInFlight(t *testing.T) {
	release, entered := make(chan struct{}), make(chan struct{}, 1)
	s, cc := serve(t, release, entered)
	errc := call(cc)
	<-entered
	stopped := make(chan bool, 1)
	go func() { stopped <- grpcserve.Stop(s, time.Hour) }()
	select {
	case <-stopped:
		t.Fatal("Stop returned while a call was in flight")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if graceful := <-stopped; !graceful {
		t.Error("Stop reported a hard stop; the call had finished on its own")
	}
	if err := <-errc; status.Code(err) == codes.Canceled || status.Code(err) == codes.Unavailable {
		t.Errorf("the call in flight was cut off: %v", err)
	}
}

func TestStopCancelsCallsAfterTimeout(t *testing.T) {
	release, entered := make(chan struct{}), make(chan struct{}, 1)
	defer close(release)
	s, cc := serve(t, release, entered)
	errc := call(cc)
	<-entered
	if graceful := grpcserve.Stop(s, 10*time.Millisecond); graceful {
		t.Error("Stop reported a graceful stop; the call never finished on its own")
	}
	if err := <-errc; err == nil {
		t.Error("the call still in flight at the timeout succeeded; want it cut off")
	}
}
