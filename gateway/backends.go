package gateway

import (
	"context"

	"github.com/tfgate/tfgate/gateway/hosts"
	"github.com/tfgate/tfgate/preprocess"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

// Backends is what the gateway needs from the TF Serving hosts. *hosts.Manager
// satisfies it through [HostBackends].
type Backends interface {
	// Predict sends req (always with an explicit version) to a host of pools
	// that has the version AVAILABLE and returns the response and the host.
	Predict(ctx context.Context, pools []string, req *servingpb.PredictRequest) (*servingpb.PredictResponse, string, error)
	// GetModelMetadata is used to check a version's spec against its signature.
	GetModelMetadata(ctx context.Context, pools []string, req *servingpb.GetModelMetadataRequest) (*servingpb.GetModelMetadataResponse, string, error)
	// SetModels names the models the gateway serves, for readiness polling.
	SetModels(models []string)
	// Want says the gateway would route the version once a host has it (its spec
	// loaded, or it is named by the config), so readiness should look for it now
	// rather than in the next budgeted resync. Cheap, non-blocking, repeatable.
	Want(model string, version int64)
	// Changes receives a value when readiness changed (coalesced).
	Changes() <-chan struct{}
	// AvailableHosts are the healthy hosts of pools reporting the version
	// AVAILABLE (invariant 2); empty when none.
	AvailableHosts(model string, version int64, pools []string) []string
}

// Specs is what the gateway needs from the preprocessing store. *preprocess.Store
// satisfies it through [StoreSpecs]. It keeps per version only the spec's content
// hash; compiled pipelines come from its cache, compiled on a miss.
type Specs interface {
	// SpecHash returns the content hash of the version's spec, false without a
	// valid spec. No I/O: every rebuild asks it for every version.
	SpecHash(model string, version int64) (preprocess.SpecHash, bool)
	// Pipeline returns the version's compiled pipeline whose content hash is h,
	// compiling it on a cache miss; an error when the version's spec on disk no
	// longer has hash h or cannot be read (preprocess.Store.Pipeline).
	Pipeline(model string, version int64, h preprocess.SpecHash) (*preprocess.Pipeline, error)
	// Err says why a version has no pipeline (nil when it has one).
	Err(model string, version int64) error
	// Versions lists the model's version directories, with or without a spec.
	Versions(model string) []int64
	// Changes receives a value when the specs changed (coalesced).
	Changes() <-chan struct{}
}

// HostBackends adapts a *hosts.Manager to [Backends].
type HostBackends struct{ *hosts.Manager }

var _ Backends = HostBackends{}

// AvailableHosts reads the manager's current readiness snapshot.
func (h HostBackends) AvailableHosts(model string, version int64, pools []string) []string {
	r := h.Snapshot()
	if !r.Available(model, version, pools) {
		return nil
	}
	return r.Hosts(model, version)
}

// StoreSpecs adapts a *preprocess.Store to [Specs].
type StoreSpecs struct{ *preprocess.Store }

var _ Specs = StoreSpecs{}

// Versions lists the model's version directories in the store's snapshot.
func (s StoreSpecs) Versions(model string) []int64 { return s.Snapshot().Versions(model) }
