package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/tfgate/tfgate/modelsync/journal"
)

// parseTime reads a history bound: RFC 3339, or a duration meaning that long ago.
func parseTime(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("time %q: want RFC 3339 (2026-11-24T05:00:00Z) or a duration ago (24h)", s)
	}
	return t, nil
}

// writeHistory prints journal entries as a table, or as JSON lines.
func writeHistory(w io.Writer, entries []journal.Entry, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		for _, e := range entries {
			if err := enc.Encode(e); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tMODEL\tVERSION\tOUTCOME\tTRIGGER\tBYTES\tTOTAL_MS\tREASON")
	for _, e := range entries {
		v := ""
		if e.Model != "" {
			v = strconv.FormatInt(e.Version, 10)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%.1f\t%s\n", e.Time.UTC().Format(time.RFC3339), e.Model, v,
			e.Outcome, e.Trigger, e.Bytes, e.PhasesMS["total"], e.Reason)
	}
	return tw.Flush()
}
