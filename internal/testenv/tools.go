package testenv

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// ErrToolMissing reports that a tool scripts/tools.sh installs is not in the cache.
var ErrToolMissing = errors.New("tool not installed")

// CacheDir is where scripts/tools.sh keeps pinned tools: $TFGATE_CACHE or ~/.cache/tfgate.
func CacheDir() string {
	if d := os.Getenv("TFGATE_CACHE"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "tfgate-cache")
	}
	return filepath.Join(home, ".cache", "tfgate")
}

// ToolPath finds an executable installed by scripts/tools.sh (or on PATH), relative
// to the cache directory when rel has a slash, else in its bin/.
func ToolPath(rel string) (string, error) {
	p := filepath.Join(CacheDir(), "bin", rel)
	if filepath.Base(rel) != rel {
		p = filepath.Join(CacheDir(), rel)
	}
	if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
		return p, nil
	}
	if filepath.Base(rel) == rel {
		if lp, err := exec.LookPath(rel); err == nil {
			return lp, nil
		}
	}
	return "", fmt.Errorf("%w: %s (run scripts/tools.sh)", ErrToolMissing, p)
}

// RequireTool returns the tool's path, or ends the test: Fatal in CI, Skip elsewhere.
func RequireTool(t testing.TB, rel string) string {
	t.Helper()
	p, err := ToolPath(rel)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%v; CI must install it", err)
	}
	t.Skipf("skipping: %v", err)
	return ""
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago, drawn at
// random below the kernel's ephemeral range (net.ipv4.ip_local_port_range), so an
// outgoing connection's local port cannot take it between this call and the
// server's bind (a port from Listen(":0") is an ephemeral one, and a busy test run
// opens thousands of outgoing connections). A port is not handed out twice by one
// process.
func FreePort(t testing.TB) int {
	t.Helper()
	low := ephemeralLow()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		p := minPort + rand.IntN(low-minPort)
		if portsGiven[p] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue // in use
		}
		_ = l.Close()
		portsGiven[p] = true
		return p
	}
	t.Fatalf("free port: no free port found in [%d, %d)", minPort, low)
	return 0
}

// minPort is the lowest port FreePort hands out: above the registered services
// that commonly run on development machines.
const minPort = 10000

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// ephemeralLow is the first port of the kernel's ephemeral range (32768 when it
// cannot be read, Linux's default).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n <= minPort+1000 {
		return 32768
	}
	return n
}
