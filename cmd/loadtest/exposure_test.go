package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/tfgate/tfgate/gateway/exposure"
)

func TestExposureCmd(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "exposure.jsonl")
	l, err := exposure.New(exposure.Config{Path: logPath}, exposure.Options{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 12, 3, 7, 0, 0, 0, time.UTC)
	for i := 0; i < 2000; i++ {
		arm, v := "control", int64(1)
		if i%2 == 0 { // 50/50 against configured 90/10
			arm, v = "treatment", 2
		}
		l.Expose(exposure.Record{Time: start.Add(time.Duration(i) * time.Millisecond), Model: "reviews", Experiment: "e", Arm: arm, Version: v, Route: "experiment", Key: fmt.Sprint("k", i), Code: codes.OK})
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "routes.yaml")
	if err := os.WriteFile(cfg, []byte(`models:
  reviews:
    default: "1"
    pools: [p]
    experiment:
      name: e
      arms:
        - {name: control, version: 1, weight: 90}
        - {name: treatment, version: 2, weight: 10}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := exposureCmd(context.Background(), []string{"--config", cfg, logPath}, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"2000 records", "experiment split: reviews/e", "MISMATCH"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if err := exposureCmd(context.Background(), []string{"--config", cfg, "--from", "2026-12-03T07:00:01Z", logPath}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "1000 records") {
		t.Errorf("--from: output\n%s\nwant 1000 records", out.String())
	}
}
