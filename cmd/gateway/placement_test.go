package main

import (
	"io"
	"testing"
)

func TestPlacementFlags(t *testing.T) {
	base := []string{"--config", "r.yaml", "--model-root", "/m", "--insecure", "--backend-insecure"}
	cfg, _, _, err := parseFlags(base, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Placement != nil {
		t.Errorf("without --placement: %+v, want nil", cfg.Placement)
	}
	cfg, _, _, err = parseFlags(append(base, "--placement", "--placement-id", "gw-a", "--placement-prefix", "prod/tfgate"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if p := cfg.Placement; p == nil || p.ID != "gw-a" || p.Store.Prefix != "prod/tfgate" {
		t.Errorf("--placement: %+v, want ID gw-a, prefix prod/tfgate", p)
	}
}
