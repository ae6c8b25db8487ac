package main

import (
	"strings"
	"testing"

	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

func TestWritePlacement(t *testing.T) {
	resp := &tfgatev1.ListPlacementResponse{Enabled: true, Leader: "gw1", ThisGatewayLeads: true, ColdWaiting: 3,
		Problems: []string{"reviews@9 is required but does not fit"},
		Versions: []*tfgatev1.PlacedVersion{
			{Model: "reviews", Version: 1, State: "placed", Assigned: []*tfgatev1.PlacedCopy{{Host: "sim1"}}, Resident: []string{"10.0.0.1:8500"}, Required: "default", Why: "reviews@1: placed"},
			{Model: "reviews", Version: 2, State: "placed", Assigned: []*tfgatev1.PlacedCopy{{Host: "sim2"}, {Host: "sim1", Draining: true}}, Loading: true, ColdWaiting: 3},
			{Model: "reviews", Version: 3, State: "pending", Cached: []string{"sim1", "sim3"}},
		}}
	var b strings.Builder
	if err := writePlacement(&b, resp, true); err != nil {
		t.Fatal(err)
	}
	got := b.String()
	for _, want := range []string{
		"leader gw1 (this gateway), report 0.0s old, 3 versions, 3 requests held for loads",
		"MODEL    VERSION  STATE    ASSIGNED",
		"reviews  1        placed   sim1",
		"sim2,sim1(draining)",
		"RESIDENT       CACHED     LOADING",
		"reviews  3        pending  -                    -              sim1,sim3  false",
		"problem: reviews@9 is required but does not fit",
		"reviews@1: reviews@1: placed",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output:\n%s\nwant it to contain %q", got, want)
		}
	}
	b.Reset()
	_ = writePlacement(&b, &tfgatev1.ListPlacementResponse{}, false)
	if !strings.Contains(b.String(), "placement is off") {
		t.Errorf("disabled: %q", b.String())
	}
}
