package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	base := []string{"--config", "routes.yaml", "--model-root", "/models"}
	tests := []struct {
		name    string
		args    []string
		wantErr string // "" means valid
		check   func(t *testing.T, args []string)
	}{
		{name: "config and model root are required", args: []string{"--insecure", "--backend-insecure"}, wantErr: "--config and --model-root are required"},
		{name: "listener TLS or --insecure", args: append(base, "--backend-insecure"), wantErr: "listener TLS (--tls-cert/--tls-key, or --insecure)"},
		{name: "key without certificate", args: append(base, "--tls-key", "k.pem", "--backend-insecure"), wantErr: "listener TLS"},
		{name: "plaintext everywhere", args: append(base, "--insecure", "--backend-insecure")},
		{name: "TLS everywhere", args: append(base, "--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-client-ca", "ca.pem",
			"--tls-allowed-subjects", "a,b", "--backend-tls-ca", "sim-ca.pem", "--tls-reload-interval", "7s")},
		{name: "consul registration", args: append(base, "--insecure", "--backend-insecure", "--consul-register", "--consul-service", "gw", "--consul-register-addr", "10.0.0.1:9500")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, logCfg, _, err := parseFlags(tc.args, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseFlags(%q) = %v, want an error containing %q", tc.args, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseFlags(%q) = %v", tc.args, err)
			}
			if cfg.ConfigPath != "routes.yaml" || cfg.ModelRoot != "/models" || cfg.AdminListen != "127.0.0.1:9501" || cfg.StartupGrace != 2*time.Minute {
				t.Errorf("parseFlags(%q) config = %+v, want the paths and the admin/grace defaults", tc.args, cfg)
			}
			if logCfg.Format != "json" || logCfg.Level != "info" {
				t.Errorf("log config = %+v, want json/info", logCfg)
			}
			if cfg.ListenerTLS == nil || cfg.BackendTLS == nil {
				t.Fatalf("parseFlags(%q): TLS configs not set: %+v", tc.args, cfg)
			}
			switch tc.name {
			case "plaintext everywhere":
				if !cfg.ListenerTLS.Insecure || !cfg.BackendTLS.Insecure || cfg.Consul != nil {
					t.Errorf("plaintext: listener %+v backend %+v consul %+v", cfg.ListenerTLS, cfg.BackendTLS, cfg.Consul)
				}
			case "TLS everywhere":
				l, b := cfg.ListenerTLS, cfg.BackendTLS
				if l.Insecure || l.CertFile != "c.pem" || l.CAFile != "ca.pem" || strings.Join(l.AllowedSubjects, ",") != "a,b" || l.ReloadInterval != 7*time.Second {
					t.Errorf("listener TLS = %+v", l)
				}
				if b.Insecure || b.CAFile != "sim-ca.pem" || b.ReloadInterval != 7*time.Second {
					t.Errorf("backend TLS = %+v", b)
				}
			case "consul registration":
				if c := cfg.Consul; c == nil || c.Name != "gw" || c.Addr != "10.0.0.1:9500" {
					t.Errorf("consul registration = %+v, want gw at 10.0.0.1:9500", c)
				}
			}
		})
	}
}

func TestExposureFlags(t *testing.T) {
	base := []string{"--config", "routes.yaml", "--model-root", "/models", "--insecure", "--backend-insecure"}
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, _, err := parseFlags(base, io.Discard)
	if err != nil || cfg.Exposure != nil {
		t.Fatalf("without --exposure-* flags: exposure %+v, err %v; want no exposure log", cfg.Exposure, err)
	}
	cfg, _, _, err = parseFlags(append(base, "--exposure-log", "/var/log/x.jsonl", "--exposure-max-size-mb", "5", "--exposure-hash-secret-file", secret), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if x := cfg.Exposure; x == nil || x.Path != "/var/log/x.jsonl" || x.MaxSizeMB != 5 || !x.HashKeys || string(x.HashSecret) != "0123456789abcdef0123" {
		t.Errorf("exposure config = %+v", cfg.Exposure)
	}
	if _, _, _, err := parseFlags(append(base, "--exposure-hash-secret-file", filepath.Join(t.TempDir(), "none")), io.Discard); err == nil {
		t.Error("a missing secret file parsed")
	}
}
