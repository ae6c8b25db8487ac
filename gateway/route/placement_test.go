package route

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tfgate/tfgate/placement"
)

const placementModels = `models:
  reviews:
    pools: [main]
    default: "1"
    labels: {stable: 2}
`

func TestPlacementDefaults(t *testing.T) {
	c, err := Parse("routes.yaml", []byte(placementModels), nil)
	if err != nil {
		t.Fatal(err)
	}
	p := c.Placement
	if p.ColdStart.MaxWait != DefaultColdStartMaxWait || p.ColdStart.MaxQueue != DefaultColdStartMaxQueue ||
		p.ColdStart.Pushback != DefaultColdStartPushback || p.ColdStart.DeadlineMargin != DefaultColdStartMargin || p.DemandInterval != DefaultDemandInterval {
		t.Errorf("defaults %+v", p)
	}
	if got := p.Policy().Pool("main"); got.MinResidency != placement.DefaultMinResidency || got.MinCopies != 1 {
		t.Errorf("pool policy %+v, want placement's defaults", got)
	}
	reqs, pools := c.Requirements()
	want := []placement.Requirement{
		{Key: placement.Key{Model: "reviews", Version: 1}, Reason: "default"},
		{Key: placement.Key{Model: "reviews", Version: 2}, Reason: "label stable"},
	}
	if len(reqs) != 2 || reqs[0] != want[0] || reqs[1] != want[1] || pools["reviews"] != "main" {
		t.Errorf("Requirements() = %+v, %v; want %+v, reviews in main", reqs, pools, want)
	}
}

func TestPlacementSection(t *testing.T) {
	c, err := Parse("routes.yaml", []byte(placementModels+`placement:
  default: {min_copies: 2, max_copies: 4, min_residency: 10m}
  pins: [{model: reviews, version: 7, min_copies: 3}]
  cold_start: {max_wait: 3s, max_queue: 10}
  demand_interval: 2s
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	p := c.Placement
	if p.Default.MinCopies != 2 || p.Default.MaxCopies != 4 || p.Default.MinResidency != 10*time.Minute || p.ColdStart.MaxWait != 3*time.Second || p.ColdStart.MaxQueue != 10 || p.DemandInterval != 2*time.Second {
		t.Errorf("placement %+v", p)
	}
	reqs, _ := c.Requirements()
	if last := reqs[len(reqs)-1]; !last.Pinned || last.Version != 7 || last.MinCopies != 3 {
		t.Errorf("pin requirement %+v", last)
	}
}

// TestPlacementProblems: every problem of the section is reported at once, and
// the config is rejected as a whole.
func TestPlacementProblems(t *testing.T) {
	_, err := Parse("routes.yaml", []byte(placementModels+`placement:
  default: {min_copies: 3, max_copies: 2, hysteresis: 1.5}
  pins: [{model: nope, version: 0}]
  cold_start: {max_wait: -1s, max_queue: -1}
  demand_interval: 10ms
  surprise: 1
`), nil)
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("Parse = %v, want a ValidationError", err)
	}
	msg := err.Error()
	for _, want := range []string{`unknown field "surprise"`} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %s\nwant it to contain %q", msg, want)
		}
	}
	_, err = Parse("routes.yaml", []byte(placementModels+`placement:
  default: {min_copies: 3, max_copies: 2, hysteresis: 1.5}
  pins: [{model: nope, version: 0}]
  cold_start: {max_wait: -1s, max_queue: -1}
  demand_interval: 10ms
`), nil)
	if err == nil {
		t.Fatal("Parse accepted a broken placement section")
	}
	msg = err.Error()
	for _, want := range []string{"max_copies 2: want >= min_copies 3", "hysteresis 1.5", `placement.pins[0]: model "nope" is not in models:`,
		"placement.pins[0]: version 0", "max_wait -1s", "max_queue -1", "demand_interval 10ms"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %s\nwant it to contain %q", msg, want)
		}
	}
}
