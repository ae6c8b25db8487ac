package gateway

import (
	"context"
	"strings"
	"testing"

	"github.com/tfgate/tfgate/internal/testwait"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// TestUnfairExperimentSaysSo: an arm whose version no host serves gives its share to
// the other arm. ListRoutes says so in words, the gateway counts it once per change
// (not once per rebuild), and the warning goes away when the weights match what runs.
func TestUnfairExperimentSaysSo(t *testing.T) {
	s := startStack(t, stackOpts{versions: []int64{1, 2}, servedVersions: []int64{1}, routes: `  reviews:
    experiment:
      name: rollout
      arms:
        - {name: control, version: 1, weight: 90}
        - {name: treatment, version: 2, weight: 10}
`})
	s.waitRoutable("reviews", 1)
	warning := func() string {
		resp, err := s.client.ListRoutes(context.Background(), &tfgatev1.ListRoutesRequest{Model: "reviews"})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetModels()[0].GetExperiment().GetWarning()
	}
	w := warning()
	for _, want := range []string{`arm "treatment" (version 2, weight 10) gets nothing`, `"control" takes 100%`} {
		if !strings.Contains(w, want) {
			t.Errorf("ListRoutes experiment warning = %q, want it to contain %q", w, want)
		}
	}
	// More rebuilds of the same state do not count again.
	s.srv.builder.rebuild()
	s.srv.builder.rebuild()
	if n := s.srv.Stats().SplitWarnings; n != 1 {
		t.Errorf("split warnings counted = %d, want 1 (once per change)", n)
	}
	// Weighted 100/0, the split is what the weights say again.
	s.writeRoutes(`  reviews:
    experiment:
      name: rollout
      arms:
        - {name: control, version: 1, weight: 100}
        - {name: treatment, version: 2, weight: 0}
`)
	testwait.Until(t, "the experiment warning to clear", func() bool { return warning() == "" })
}
