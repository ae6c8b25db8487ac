package gateway

import (
	"testing"
	"time"
)

func TestRebuildDelay(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		name           string
		last, sinceEnd time.Duration
		want           time.Duration
	}{
		{"first rebuild", 0, 0, 0},
		{"cheap rebuild waits microseconds", 20 * time.Microsecond, 0, 80 * time.Microsecond},
		{"expensive rebuild just ended", 50 * ms, 0, 200 * ms},
		{"expensive rebuild partly waited out", 50 * ms, 150 * ms, 50 * ms},
		{"expensive rebuild long ago", 50 * ms, time.Second, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := rebuildDelay(tc.last, tc.sinceEnd); got != tc.want {
				t.Errorf("rebuildDelay(%v, %v) = %v, want %v", tc.last, tc.sinceEnd, got, tc.want)
			}
		})
	}
}
