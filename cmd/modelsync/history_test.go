package main

import (
	"bytes"
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/tfgate/tfgate/modelsync"
	"github.com/tfgate/tfgate/modelsync/journal"
)

func TestParseTime(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in      string
		want    time.Time
		wantErr bool
	}{
		{in: "", want: time.Time{}},
		{in: "24h", want: now.Add(-24 * time.Hour)},
		{in: "2026-11-01T00:00:00Z", want: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)},
		{in: "yesterday", wantErr: true},
	}
	for _, tc := range tests {
		got, err := parseTime(tc.in, now)
		if (err != nil) != tc.wantErr || !got.Equal(tc.want) {
			t.Errorf("parseTime(%q) = %v, %v; want %v (error %v)", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestWriteHistory(t *testing.T) {
	entries := []journal.Entry{
		{Time: time.Unix(0, 0), Model: "ctr", Version: 3, Outcome: journal.Published, Trigger: "sqs", Bytes: 10, PhasesMS: map[string]float64{"total": 1.5}},
		{Time: time.Unix(1, 0), Outcome: journal.Rejected, Reason: "malformed notification: body is not a JSON object"},
	}
	var table bytes.Buffer
	if err := writeHistory(&table, entries, false); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(table.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "TIME") || !strings.Contains(lines[1], "ctr") ||
		!strings.Contains(lines[2], "body is not a JSON object") {
		t.Errorf("table:\n%s", table.String())
	}
	var js bytes.Buffer
	writeHistory(&js, entries, true)
	if n := strings.Count(js.String(), "\n"); n != 2 {
		t.Errorf("JSON lines: %d, want 2:\n%s", n, js.String())
	}
}

func TestBindFlags(t *testing.T) {
	cfg := modelsync.DefaultConfig()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	bindFlags(fs, &cfg)
	err := fs.Parse([]string{"-base-path", "/m", "-receive-wait", "3s", "-pinned", "a/1, b/2", "-include", "assets", "-retain", "4"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.BasePath != "/m" || cfg.ReceiveWait != modelsync.Duration(3*time.Second) || len(cfg.Pinned) != 2 || cfg.Pinned[1] != "b/2" ||
		cfg.Include[0] != "assets" || cfg.Retain != 4 || cfg.Concurrency != modelsync.DefaultConfig().Concurrency {
		t.Errorf("flags gave %+v", cfg)
	}
}
