package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tfgate/tfgate/gateway/discovery"
	"github.com/tfgate/tfgate/internal/telemetry"
	"github.com/tfgate/tfgate/internal/testenv"
	"github.com/tfgate/tfgate/internal/testwait"
)

type fakeReady struct {
	settled  bool
	why      string
	routable bool
	models   int
}

func (f fakeReady) Settled() (bool, string)  { return f.settled, f.why }
func (f fakeReady) AnyRoutable() (bool, int) { return f.routable, f.models }

func TestReadinessPolicy(t *testing.T) {
	tests := []struct {
		name      string
		state     fakeReady
		graceOver bool
		wantErr   string // "" means ready
	}{
		{name: "settled and routable", state: fakeReady{settled: true, routable: true, models: 3}},
		{name: "settling", state: fakeReady{why: "2 signature checks pending", routable: true, models: 3}, wantErr: "gateway starting: 2 signature checks pending"},
		{name: "settling, grace over, routable", state: fakeReady{why: "2 signature checks pending", routable: true, models: 3}, graceOver: true},
		{name: "settled, nothing routable", state: fakeReady{settled: true, models: 3}, wantErr: "no routable version among 3 models"},
		{name: "grace over, nothing routable", state: fakeReady{why: "waiting", models: 2}, graceOver: true, wantErr: "no routable version among 2 models"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := readiness(tc.state, tc.graceOver)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("readiness(%+v, graceOver=%v) = %v, want ready", tc.state, tc.graceOver, err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("readiness(%+v, graceOver=%v) = %v, want an error containing %q", tc.state, tc.graceOver, err, tc.wantErr)
			}
		})
	}
	if err := Readiness(nil, true); !errors.Is(err, errStarting) {
		t.Errorf("Readiness before serving = %v, want %v", err, errStarting)
	}
}

func get(t *testing.T, url string) (int, string, error) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// Run serves the admin server (metrics, health, the readiness policy), keeps
// the gateway registered in Consul while it serves, and at shutdown removes the
// registration and stops the admin server before it returns.
func TestRunServesAdminAndRegisters(t *testing.T) {
	adminLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	admin := "http://" + adminLis.Addr().String()
	registered := make(chan discovery.Registration, 1)
	deregistered := make(chan struct{})
	s := startStack(t, stackOpts{run: func(cfg *RunConfig, deps *Deps) {
		cfg.Consul = &discovery.Registration{Name: "tfgate-gateway-test"}
		deps.AdminListener = adminLis
		deps.Telemetry = telemetry.NewNoop()
		deps.Register = func(ctx context.Context, r discovery.Registration, _ *slog.Logger) error {
			registered <- r
			<-ctx.Done()
			close(deregistered)
			return nil
		}
	}})

	select {
	case r := <-registered:
		if r.Name != "tfgate-gateway-test" || r.Addr != s.addr || r.CheckTLS {
			t.Errorf("registered %+v, want name tfgate-gateway-test, the listener's address %s, plaintext check", r, s.addr)
		}
	case <-deregistered:
		t.Fatal("deregistered before registering")
	}

	for _, path := range []string{"/healthz", "/metrics"} {
		if code, body, err := get(t, admin+path); err != nil || code != http.StatusOK {
			t.Errorf("GET %s = %d %q, %v; want 200", path, code, body, err)
		}
	}
	// Ready once start-up settles (servingsim answers every readiness round).
	testwait.UntilNil(t, "GET /readyz to answer 200", func() error {
		code, body, err := get(t, admin+"/readyz")
		switch {
		case err != nil:
			return err
		case code == http.StatusServiceUnavailable:
			return fmt.Errorf("503 %q", body)
		case code != http.StatusOK:
			t.Fatalf("GET /readyz = %d %q, want 200 or 503", code, body)
		}
		return nil
	})

	s.stop()
	select {
	case <-deregistered:
	default:
		t.Error("Run returned with the gateway still registered")
	}
	if _, _, err := get(t, admin+"/healthz"); err == nil {
		t.Error("the admin server still answers after Run returned")
	}
}

// An admin address that cannot be listened on fails Run at start, rather than
// leaving the gateway running without metrics or readiness.
func TestRunFailsOnAdminListenError(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfgPath := filepath.Join(t.TempDir(), "routes.yaml")
	if err := os.WriteFile(cfgPath, []byte(routingConfig("127.0.0.1:1", "  reviews: {default: \"1\"}\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	err = Run(context.Background(), RunConfig{ConfigPath: cfgPath, ModelRoot: t.TempDir(), AdminListen: taken.Addr().String()}, Deps{})
	if err == nil || !strings.Contains(err.Error(), "admin listen") {
		t.Errorf("Run with a taken admin address = %v, want an admin listen error", err)
	}
}

// With a real Consul agent: Run registers the gateway once it serves, Consul's
// gRPC health check against it passes, and the registration is gone when Run
// returns.
func TestRunRegistersInConsul(t *testing.T) {
	agent := testenv.StartConsul(t)
	cl := agent.Client(t)
	const name = "tfgate-gateway-it"
	s := startStack(t, stackOpts{run: func(cfg *RunConfig, _ *Deps) {
		cfg.Consul = &discovery.Registration{Client: discovery.ClientConfig{Address: agent.HTTPAddr}, Name: name, CheckInterval: 100 * time.Millisecond}
	}})
	_, port, err := net.SplitHostPort(s.addr)
	if err != nil {
		t.Fatal(err)
	}
	testwait.UntilNil(t, "the gateway registered and passing in Consul", func() error {
		entries, _, err := cl.Health().Service(name, "", true, nil)
		if err != nil {
			return err
		}
		if len(entries) != 1 || fmt.Sprint(entries[0].Service.Port) != port {
			return fmt.Errorf("passing instances: %d, want one on port %s", len(entries), port)
		}
		return nil
	})
	s.stop()
	services, err := cl.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	for id, svc := range services {
		if svc.Service == name {
			t.Errorf("after Run returned, %s is still registered as %s", name, id)
		}
	}
}
