package gateway

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/tfgate/tfgate/internal/servingsim/model"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

// settling is fakeBackends whose signature answers (GetModelMetadata) wait while
// a version is held.
type settling struct {
	*fakeBackends

	mu   sync.Mutex
	held map[int64]chan struct{}
}

func (b *settling) hold(v int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.held[v] = make(chan struct{})
}

func (b *settling) release(v int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.held[v])
}

func (b *settling) GetModelMetadata(ctx context.Context, pools []string, req *servingpb.GetModelMetadataRequest) (*servingpb.GetModelMetadataResponse, string, error) {
	b.mu.Lock()
	held := b.held[req.GetModelSpec().GetVersion().GetValue()]
	b.mu.Unlock()
	if held != nil {
		select {
		case <-held:
		case <-ctx.Done():
			return nil, "", ctx.Err()
		}
	}
	return b.fakeBackends.GetModelMetadata(ctx, pools, req)
}

// Start-up settles once the backends finished their first full round and the
// versions they serve finished their signature checks; it stays settled when a
// version published later is being checked.
func TestSettledWaitsForFirstRoundAndSignatureChecks(t *testing.T) {
	root := t.TempDir()
	writeVersions(t, root, "reviews", model.KindTextClassifier, model.Cost{}, 1)
	store := scannedStore(t, root)
	cfg := filepath.Join(t.TempDir(), "routes.yaml")
	writeModels(t, cfg, "  reviews: {}\n")
	b := &settling{fakeBackends: newFakeBackends(root), held: map[int64]chan struct{}{}}
	b.hold(1)
	firstRound := make(chan struct{})
	srv := runServer(t, Options{ConfigPath: cfg, Backends: b, Specs: StoreSpecs{store}, BackendsReady: firstRound, WatchInterval: -1})

	if ok, why := srv.Settled(); ok || !strings.Contains(why, "first readiness round") {
		t.Fatalf("before the first readiness round: Settled() = %v, %q; want false, waiting for the round", ok, why)
	}
	close(firstRound) // Run rebuilds on its own: the round need not have changed anything
	waitUntil(t, "the rebuild after the first round", func() bool { return srv.builder.current().backendsReady })
	if ok, why := srv.Settled(); ok || why != "1 signature checks pending" {
		t.Fatalf("with version 1's signature check held: Settled() = %v, %q; want false, 1 check pending", ok, why)
	}
	b.release(1)
	waitUntil(t, "settled after the check", func() bool { ok, _ := srv.Settled(); return ok })

	// A version published after start-up does not make the gateway unsettled.
	b.hold(2)
	defer b.release(2)
	writeVersions(t, root, "reviews", model.KindTextClassifier, model.Cost{}, 2)
	if err := store.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "version 2's check to start", func() bool { return srv.builder.current().sigPending == 1 })
	if ok, why := srv.Settled(); !ok {
		t.Errorf("after start-up, with a new version's check pending: Settled() = false, %q; want it to stay settled", why)
	}
}

// With real hosts (servingsim behind hosts.Manager, through Run), start-up
// settles once every served version is routable.
func TestSettlesWithRealHosts(t *testing.T) {
	s := startStack(t, stackOpts{versions: []int64{1, 2}})
	waitUntil(t, "start-up to settle", func() bool { ok, _ := s.srv.Settled(); return ok })
	snap := s.srv.builder.current()
	for _, k := range []vkey{{"reviews", 1}, {"reviews", 2}, {"churn", 1}} {
		if snap.pipes[k] == nil {
			t.Errorf("settled, but %s version %d is not routable", k.model, k.version)
		}
	}
}
