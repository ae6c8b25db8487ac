package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tfgate/tfgate/internal/modelgen"
	"github.com/tfgate/tfgate/internal/servingsim/model"
	"github.com/tfgate/tfgate/internal/testenv"
	"github.com/tfgate/tfgate/internal/testwait"
	"github.com/tfgate/tfgate/modelsync/publish"
	"github.com/tfgate/tfgate/placement"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

// TestRunPlacement: `modelsync run -placement` against a real Consul agent (found
// through CONSUL_HTTP_ADDR), the S3 server and a servingsim process fetches and
// loads exactly the host's assignment, and reports the host's status to KV.
func TestRunPlacement(t *testing.T) {
	bin := buildBinary(t)
	consul := testenv.StartConsul(t)
	store := placement.NewStore(consul.Client(t), placement.StoreConfig{Prefix: "t"})
	s3srv := testenv.StartS3(t)
	s3srv.CreateBucket(t, "models")
	ctx := context.Background()
	for _, m := range []string{"ctr", "ranker"} {
		dir := filepath.Join(t.TempDir(), m)
		if err := modelgen.Export(dir, modelgen.Spec{Kind: model.KindLinear}); err != nil {
			t.Fatal(err)
		}
		if _, err := publish.Publish(ctx, s3srv.Client, nil, publish.PublishOptions{Bucket: "models", Prefix: "models", Model: m, Version: 1, Dir: dir}); err != nil {
			t.Fatal(err)
		}
	}
	base := t.TempDir()
	cfgFile := filepath.Join(t.TempDir(), "models.config")
	os.WriteFile(cfgFile, []byte("model_config_list {}\n"), 0o644)
	sim := testenv.StartServingsim(t, "--model_config_file="+cfgFile, "--file_system_poll_wait_seconds=1")

	st, err := store.ReadState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a := placement.Assignment{Hosts: map[string]placement.HostAssignment{"h1": {Pool: "gpu",
		Entries: []placement.Entry{{Key: placement.Key{Model: "ctr", Version: 1}, Bytes: 1, Since: time.Now()}}}}}
	if _, err := store.WriteAssignment(ctx, "", a, st); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(bin, "run", "-base-path", base, "-bucket", "models", "-prefix", "models",
		"-s3-endpoint", s3srv.Endpoint, "-s3-path-style", "-catch-up=false",
		"-tfserving-addr", sim.Addr, "-model-config-file", cfgFile,
		"-placement", "-placement-host", "h1", "-placement-pool", "gpu", "-placement-kv-prefix", "t",
		"-placement-poll-interval", "100ms", "-placement-status-interval", "500ms", "-log-format", "text")
	cmd.Env = append(os.Environ(), "CONSUL_HTTP_ADDR="+consul.HTTPAddr, "AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test",
		"AWS_REGION=us-east-1", "AWS_EC2_METADATA_DISABLED=true")
	logs := &syncWriter{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		<-exited
		if t.Failed() {
			t.Logf("modelsync output:\n%s", logs.String())
		}
	})

	conn, err := grpc.NewClient(sim.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ms := servingpb.NewModelServiceClient(conn)
	testwait.UntilNil(t, "ctr@1 AVAILABLE in servingsim and reported in KV, ranker nowhere", func() error {
		resp, err := ms.GetModelStatus(ctx, &servingpb.GetModelStatusRequest{ModelSpec: &servingpb.ModelSpec{
			Name: "ctr", VersionChoice: &servingpb.ModelSpec_Version{Version: wrapperspb.Int64(1)}}})
		if err != nil || resp.GetModelVersionStatus()[0].GetState() != servingpb.ModelVersionStatus_AVAILABLE {
			return fmt.Errorf("ctr@1: %v %v", resp, err)
		}
		r, err := store.ReadReports(ctx)
		if err != nil {
			return err
		}
		hs := r.Status["h1"]
		if len(hs.Resident) != 1 || hs.Resident[0].Model != "ctr" || hs.Pool != "gpu" {
			return fmt.Errorf("status %+v", hs)
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(base, "ranker")); !os.IsNotExist(err) {
		t.Errorf("unassigned model ranker is on disk (%v)", err)
	}
}

func TestRunPlacementUsage(t *testing.T) {
	bin := buildBinary(t)
	out, err := exec.Command(bin, "run", "-base-path", t.TempDir(), "-bucket", "b", "-placement").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "host is required") || !strings.Contains(string(out), "tfserving_addr and model_config_file are required") {
		t.Errorf("run -placement without host and TF Serving: err %v, output %q", err, out)
	}
}

// syncWriter is a buffer safe for the process's writes and the test's reads.
type syncWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}
