package loadtest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/tfgate/tfgate/gateway/exposure"
	"github.com/tfgate/tfgate/loadtest/stats"
)

// ExposureWindow selects exposure records by time: From inclusive, To
// exclusive; a zero bound is open.
type ExposureWindow struct {
	From, To time.Time
}

func (w ExposureWindow) has(t time.Time) bool {
	return (w.From.IsZero() || !t.Before(w.From)) && (w.To.IsZero() || t.Before(w.To))
}

// ExposureRead is what ReadExposures took from a log.
type ExposureRead struct {
	// Records were added to the recorder; Outside were outside the window.
	Records, Outside int
	// First and Last are the earliest and latest record times added.
	First, Last time.Time
}

// ExperimentModel is the name an experiment's records are recorded under, so
// that a report's split is per experiment: "model/experiment".
func ExperimentModel(model, experiment string) string { return model + "/" + experiment }

// ReadExposures adds every record of an exposure log (package gateway/exposure)
// within w to rec as a sample: experiment-routed records under
// [ExperimentModel] with their arm, so that [stats.Summarize] tests each
// experiment's split exactly as it tests a load test's; the routing key (or
// its hash) is the unit of randomization. It stops at the first line that is
// not a record, naming it.
func ReadExposures(r io.Reader, rec *stats.Recorder, w ExposureWindow, into *ExposureRead) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		var l exposure.Line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return fmt.Errorf("line %d: not an exposure record: %v", line, err)
		}
		t, err := time.Parse(time.RFC3339Nano, l.Time)
		if err != nil || l.Model == "" {
			return fmt.Errorf("line %d: not an exposure record (time %q, model %q)", line, l.Time, l.Model)
		}
		if !w.has(t) {
			into.Outside++
			continue
		}
		s := stats.Sample{
			Model: l.Model, Version: l.Version, Code: l.Code, At: -1,
			Latency:    time.Duration(l.LatencyMS * float64(time.Millisecond)),
			RoutingKey: l.Key,
		}
		if l.KeyHash != "" {
			s.RoutingKey = l.KeyHash
		}
		if l.Experiment != "" {
			s.Model, s.Arm, s.Experiment = ExperimentModel(l.Model, l.Experiment), l.Arm, l.Experiment
		}
		rec.Record(s)
		into.Records++
		if into.First.IsZero() || t.Before(into.First) {
			into.First = t
		}
		if t.After(into.Last) {
			into.Last = t
		}
	}
	return sc.Err()
}
