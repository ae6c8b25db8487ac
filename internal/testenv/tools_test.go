package testenv

import (
	"fmt"
	"net"
	"testing"
)

func TestFreePort(t *testing.T) {
	low := ephemeralLow()
	seen := map[int]bool{}
	for range 50 {
		p := FreePort(t)
		if p < minPort || p >= low {
			t.Fatalf("FreePort() = %d, want in [%d, %d) (below the ephemeral range)", p, minPort, low)
		}
		if seen[p] {
			t.Fatalf("FreePort() returned %d twice", p)
		}
		seen[p] = true
	}
	for p := range seen {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Errorf("port %d from FreePort is not bindable: %v", p, err)
			continue
		}
		_ = l.Close()
	}
}
