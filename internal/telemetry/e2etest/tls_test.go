package e2etest

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/tfgate/tfgate/internal/testwait"
	"github.com/tfgate/tfgate/internal/tlsconfig"
	"github.com/tfgate/tfgate/internal/tlsconfig/tlstest"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// pemFiles writes a certificate and key (and the CA) under dir.
func pemFiles(t *testing.T, dir, name string, cert, key, ca []byte) tlsconfig.Config {
	t.Helper()
	c := tlsconfig.Config{CAFile: filepath.Join(dir, name+"-ca.pem")}
	tlstest.WriteFile(t, c.CAFile, ca)
	if cert != nil {
		c.CertFile, c.KeyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
		tlstest.WriteFile(t, c.CertFile, cert)
		tlstest.WriteFile(t, c.KeyFile, key)
	}
	return c
}

// TestGatewayMutualTLSAndRotation runs the gateway with mTLS on its listener
// (allowed subjects) and TLS towards servingsim: a caller without a valid
// certificate is refused, an allowed one is served, and a rotated server
// certificate is used by the next connection without a restart.
func TestGatewayMutualTLSAndRotation(t *testing.T) {
	dir := t.TempDir()
	ca, rogue := tlstest.NewCA(t, "tfgate test CA"), tlstest.NewCA(t, "rogue CA")

	gwCert, gwKey := ca.Issue(t, "gateway.test")
	lcfg := pemFiles(t, dir, "gateway", gwCert, gwKey, ca.PEM)
	lcfg.AllowedSubjects = []string{"product-svc"}
	lcfg.ReloadInterval = time.Nanosecond // check the files on every handshake
	simCert, simKey := ca.Issue(t, "tfserving.test")
	scfg := pemFiles(t, dir, "sim", simCert, simKey, ca.PEM)
	scfg.CAFile = "" // TF Serving with server TLS only
	sim, err := tlsconfig.NewServer(scfg, tlsconfig.Options{Name: "sim"})
	if err != nil {
		t.Fatal(err)
	}
	bcfg := tlsconfig.Config{CAFile: filepath.Join(dir, "sim-ca.pem")}

	client := func(name string, cert, key, caPEM []byte) credentials.TransportCredentials {
		c := pemFiles(t, dir, name, cert, key, caPEM)
		c.ServerName = "gateway.test"
		src, err := tlsconfig.NewClient(c, tlsconfig.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return src.Credentials()
	}
	okCert, okKey := ca.Issue(t, "product-svc")
	allowed := client("allowed", okCert, okKey, ca.PEM)
	e := start(t, opts{listener: &lcfg, sim: sim, backends: &bcfg, clientCreds: allowed})

	predict := func(creds credentials.TransportCredentials) (*peer.Peer, error) {
		conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var p peer.Peer
		_, err = tfgatev1.NewGatewayServiceClient(conn).Predict(ctx, &tfgatev1.PredictRequest{
			Model: "reviews", Target: &tfgatev1.PredictRequest_Version{Version: 1}, Instances: text("secure")}, grpc.Peer(&p))
		return &p, err
	}

	strangerCert, strangerKey := ca.Issue(t, "stranger")
	rogueCert, rogueKey := rogue.Issue(t, "product-svc")
	tests := []struct {
		name     string
		creds    credentials.TransportCredentials
		wantCode codes.Code
	}{
		{name: "allowed client certificate, backend over TLS", creds: allowed, wantCode: codes.OK},
		{name: "no client certificate", creds: client("nocert", nil, nil, ca.PEM), wantCode: codes.Unavailable},
		{name: "subject not allowed", creds: client("stranger", strangerCert, strangerKey, ca.PEM), wantCode: codes.Unavailable},
		{name: "certificate from another CA", creds: client("rogue", rogueCert, rogueKey, ca.PEM), wantCode: codes.Unavailable},
		{name: "plaintext", creds: insecure.NewCredentials(), wantCode: codes.Unavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := predict(tc.creds)
			if status.Code(err) != tc.wantCode {
				t.Fatalf("Predict = %v, want %v", err, tc.wantCode)
			}
		})
	}

	// Rotation: a new certificate in the same files is served to a new
	// connection; the gateway keeps running. (The files are checked on every
	// handshake and on the source's timer; a handshake that finds the timer
	// mid-check, perhaps between the key and the certificate being written,
	// uses the material it has, so the rotation shows within a few handshakes.)
	gw2Cert, gw2Key := ca.Issue(t, "gateway.test")
	tlstest.WriteFile(t, lcfg.KeyFile, gw2Key)
	tlstest.WriteFile(t, lcfg.CertFile, gw2Cert)
	wantSerial := mustSerial(t, gw2Cert)
	testwait.UntilNil(t, "a new connection to get the rotated certificate", func() error {
		p, err := predict(allowed)
		if err != nil {
			t.Fatalf("Predict after rotation: %v", err)
		}
		info, ok := p.AuthInfo.(credentials.TLSInfo)
		if !ok || len(info.State.PeerCertificates) == 0 {
			t.Fatalf("no TLS peer info: %#v", p.AuthInfo)
		}
		if got := info.State.PeerCertificates[0].SerialNumber.String(); got != wantSerial {
			return fmt.Errorf("after rotation the gateway served certificate serial %s, want the new one %s", got, wantSerial)
		}
		return nil
	})
	if _, err := predict(client("nocert2", nil, nil, ca.PEM)); status.Code(err) != codes.Unavailable {
		t.Errorf("after rotation, no client certificate: %v, want Unavailable", err)
	}
}

func mustSerial(t *testing.T, certPEM []byte) string {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c.SerialNumber.String()
}

// TestSIGHUPReloadsCertificates: with file checks far apart (an hour), a SIGHUP
// (Deps.Reload) makes the gateway re-read the routing config, the listener's
// certificate and the backends' CA bundle at once: the next connection gets the
// rotated certificate, and the gateway still reaches TF Serving.
func TestSIGHUPReloadsCertificates(t *testing.T) {
	dir := t.TempDir()
	ca, other := tlstest.NewCA(t, "tfgate test CA"), tlstest.NewCA(t, "next CA")
	gwCert, gwKey := ca.Issue(t, "gateway.test")
	lcfg := pemFiles(t, dir, "gateway", gwCert, gwKey, ca.PEM)
	lcfg.CAFile = "" // server TLS only
	lcfg.ReloadInterval = time.Hour
	simCert, simKey := ca.Issue(t, "tfserving.test")
	scfg := pemFiles(t, dir, "sim", simCert, simKey, ca.PEM)
	scfg.CAFile = ""
	sim, err := tlsconfig.NewServer(scfg, tlsconfig.Options{Name: "sim"})
	if err != nil {
		t.Fatal(err)
	}
	bcfg := tlsconfig.Config{CAFile: filepath.Join(dir, "sim-ca.pem"), ReloadInterval: time.Hour}
	csrc, err := tlsconfig.NewClient(tlsconfig.Config{CAFile: filepath.Join(dir, "gateway-ca.pem"), ServerName: "gateway.test"}, tlsconfig.Options{})
	if err != nil {
		t.Fatal(err)
	}
	hup := make(chan os.Signal, 1)
	e := start(t, opts{listener: &lcfg, sim: sim, backends: &bcfg, clientCreds: csrc.Credentials(), reload: hup})

	servedSerial := func() string {
		t.Helper()
		conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(csrc.Credentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var p peer.Peer
		if _, err := tfgatev1.NewGatewayServiceClient(conn).Predict(ctx, &tfgatev1.PredictRequest{
			Model: "reviews", Target: &tfgatev1.PredictRequest_Version{Version: 1}, Instances: text("hup")}, grpc.Peer(&p)); err != nil {
			t.Fatalf("Predict: %v", err)
		}
		info, ok := p.AuthInfo.(credentials.TLSInfo)
		if !ok || len(info.State.PeerCertificates) == 0 {
			t.Fatalf("no TLS peer info: %#v", p.AuthInfo)
		}
		return info.State.PeerCertificates[0].SerialNumber.String()
	}
	if got, want := servedSerial(), mustSerial(t, gwCert); got != want {
		t.Fatalf("before rotation the gateway served serial %s, want %s", got, want)
	}

	// Rotate the listener's certificate and add a CA to the backends' bundle
	// (which still trusts servingsim); nothing re-reads them within the hour.
	gw2Cert, gw2Key := ca.Issue(t, "gateway.test")
	tlstest.WriteFile(t, lcfg.KeyFile, gw2Key)
	tlstest.WriteFile(t, lcfg.CertFile, gw2Cert)
	tlstest.WriteFile(t, bcfg.CAFile, append(append([]byte{}, ca.PEM...), other.PEM...))
	hup <- syscall.SIGHUP

	// Wait for the reloads the SIGHUP causes: one of each certificate source and
	// one more routing config load.
	reloaded := func() (listener, backends, configs float64) {
		fams := scrape(t, e.metrics)
		for _, m := range fams["tfgate_tls_reloads_total"].GetMetric() {
			if l := labels(m); l["outcome"] == "ok" {
				switch l["name"] {
				case "listener":
					listener = m.GetCounter().GetValue()
				case "backends":
					backends = m.GetCounter().GetValue()
				}
			}
		}
		for _, m := range fams["tfgate_gateway_config_reloads_total"].GetMetric() {
			configs = m.GetCounter().GetValue()
		}
		return
	}
	testwait.UntilNil(t, "the reloads a SIGHUP causes", func() error {
		if l, b, c := reloaded(); l < 1 || b < 1 || c < 2 {
			return fmt.Errorf("TLS reloads listener=%v backends=%v, routing config loads %v; want >=1, >=1, >=2", l, b, c)
		}
		return nil
	})
	if got, want := servedSerial(), mustSerial(t, gw2Cert); got != want {
		t.Errorf("after SIGHUP the gateway served serial %s, want the rotated %s", got, want)
	}
}
