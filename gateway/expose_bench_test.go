package gateway

import (
	"context"
	"io"
	"sync"
	"testing"

	"github.com/tfgate/tfgate/gateway/exposure"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// BenchmarkExposureOverhead is the request path's cost of the exposure log:
// the same in-process Predict (one 12-word instance) without a sink, with the
// log writing to io.Discard, and with keyed hashing of the routing key. The
// writer goroutine's own cost per record (encoding, hashing) is
// exposure.BenchmarkWriter; it runs off the request path.
func BenchmarkExposureOverhead(b *testing.B) {
	srv, _, stop := newInProcess(b)
	defer stop()
	ctx := context.Background()
	req := &tfgatev1.PredictRequest{Model: "reviews", RoutingKey: "customer-1234567", Instances: text("the delivery was late but the support team fixed everything quickly, thanks!")}
	for _, tc := range []struct {
		name string
		cfg  *exposure.Config
	}{
		{name: "off"},
		{name: "log", cfg: &exposure.Config{Path: "discard", Buffer: 1 << 20}},
		{name: "log+hash", cfg: &exposure.Config{Path: "discard", Buffer: 1 << 20, HashKeys: true, HashSecret: []byte("0123456789abcdef0123")}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var l *exposure.Log
			if tc.cfg != nil {
				var err error
				if l, err = exposure.New(*tc.cfg, exposure.Options{Output: io.Discard}); err != nil {
					b.Fatal(err)
				}
				srv.opts.Exposures = l
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := srv.Predict(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			srv.opts.Exposures = nil
			if l != nil {
				if err := l.Close(context.Background()); err != nil {
					b.Fatal(err)
				}
				if st := l.Stats(); st.Dropped() != 0 {
					b.Fatalf("dropped %d records: the benchmark measured drops, not writes", st.Dropped())
				}
			}
		})
	}
}

// stuck is an exposure output whose writes wait until release is closed.
type stuck struct {
	entered chan struct{}
	once    sync.Once
	release chan struct{}
}

func (s *stuck) Write(p []byte) (int, error) {
	s.once.Do(func() { close(s.entered) })
	<-s.release
	return len(p), nil
}

// A stuck exposure writer (a hung disk) neither blocks nor fails requests:
// they complete while it is stuck, and the records are dropped and counted.
func TestExposureStuckWriterDoesNotBlockRequests(t *testing.T) {
	srv, _, stop := newInProcess(t)
	defer stop()
	out := &stuck{entered: make(chan struct{}), release: make(chan struct{})}
	l, err := exposure.New(exposure.Config{Path: "stuck", Buffer: 16, FlushInterval: 1}, exposure.Options{Output: out})
	if err != nil {
		t.Fatal(err)
	}
	srv.opts.Exposures = l
	req := &tfgatev1.PredictRequest{Model: "reviews", Instances: text("fine")}
	if _, err := srv.Predict(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	<-out.entered // the writer is stuck from here on
	const n = 2000
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for g := 0; g < 8; g++ {
		wg.Go(func() {
			for i := 0; i < n/8; i++ {
				if _, err := srv.Predict(context.Background(), req); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait() // a request blocked on the log would hang here
	close(errs)
	for err := range errs {
		t.Errorf("Predict with a stuck exposure writer: %v", err)
	}
	if st := l.Stats(); st.DroppedFull < n-16 {
		t.Errorf("stats %+v: want at least %d of %d records dropped with a 16-record queue", st, n-16, n)
	}
	close(out.release)
	srv.opts.Exposures = nil
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}
