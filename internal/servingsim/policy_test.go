package servingsim_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"

	"github.com/tfgate/tfgate/internal/modelgen"
	"github.com/tfgate/tfgate/internal/servingsim"
	"github.com/tfgate/tfgate/internal/testwait"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

// versionsIn returns "version:STATE" rows of GetModelStatus, newest first.
func versionsIn(t *testing.T, c *clients, name string) []string {
	t.Helper()
	resp, err := c.model.GetModelStatus(ctxT(t), &servingpb.GetModelStatusRequest{ModelSpec: &servingpb.ModelSpec{Name: name}})
	if err != nil {
		t.Fatalf("GetModelStatus(%s): %v", name, err)
	}
	var out []string
	for _, v := range resp.GetModelVersionStatus() {
		out = append(out, strings.Join([]string{itoa(v.GetVersion()), v.GetState().String()}, ":"))
	}
	return out
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

func policy(p string, versions ...int64) *servingpb.FileSystemStoragePathSourceConfig_ServableVersionPolicy {
	switch p {
	case "all":
		return &servingpb.FileSystemStoragePathSourceConfig_ServableVersionPolicy{PolicyChoice: &servingpb.FileSystemStoragePathSourceConfig_ServableVersionPolicy_All_{All: &servingpb.FileSystemStoragePathSourceConfig_ServableVersionPolicy_All{}}}
	case "specific":
		return &servingpb.FileSystemStoragePathSourceConfig_ServableVersionPolicy{PolicyChoice: &servingpb.FileSystemStoragePathSourceConfig_ServableVersionPolicy_Specific_{Specific: &servingpb.FileSystemStoragePathSourceConfig_ServableVersionPolicy_Specific{Versions: versions}}}
	}
	return &servingpb.FileSystemStoragePathSourceConfig_ServableVersionPolicy{PolicyChoice: &servingpb.FileSystemStoragePathSourceConfig_ServableVersionPolicy_Latest_{Latest: &servingpb.FileSystemStoragePathSourceConfig_ServableVersionPolicy_Latest{NumVersions: uint32(versions[0])}}}
}

func TestVersionPolicies(t *testing.T) {
	base := t.TempDir()
	for v := int64(1); v <= 3; v++ {
		export(t, base, v, linearSpec(v))
	}
	tests := []struct {
		name   string
		policy *servingpb.FileSystemStoragePathSourceConfig_ServableVersionPolicy
		want   []string
	}{
		{"default is latest 1", nil, []string{"3:AVAILABLE"}},
		{"latest 2", policy("latest", 2), []string{"3:AVAILABLE", "2:AVAILABLE"}},
		{"latest 0 means 1", policy("latest", 0), []string{"3:AVAILABLE"}},
		{"latest more than exist", policy("latest", 9), []string{"3:AVAILABLE", "2:AVAILABLE", "1:AVAILABLE"}},
		{"all", policy("all"), []string{"3:AVAILABLE", "2:AVAILABLE", "1:AVAILABLE"}},
		{"specific", policy("specific", 1, 3), []string{"3:AVAILABLE", "1:AVAILABLE"}},
		{"specific missing on disk", policy("specific", 2, 7), []string{"2:AVAILABLE"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfgFile := filepath.Join(t.TempDir(), "models.config")
			m := mc("lin", base)
			m.ModelVersionPolicy = tc.policy
			writeConfig(t, cfgFile, list(m))
			c := start(t, func(cfg *servingsim.Config) { cfg.ModelConfigFile = cfgFile })
			if got := versionsIn(t, c, "lin"); !slices.Equal(got, tc.want) {
				t.Errorf("policy %v: versions %v, want %v", tc.policy, got, tc.want)
			}
		})
	}
}

func writeConfig(t *testing.T, path string, c *servingpb.ModelServerConfig) {
	t.Helper()
	b, err := prototext.MarshalOptions{Multiline: true}.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestPolling(t *testing.T) {
	base := t.TempDir()
	export(t, base, 1, linearSpec(1))
	c := start(t, func(cfg *servingsim.Config) { cfg.ModelName, cfg.ModelBasePath = "m", base })
	ctx := ctxT(t)
	predictVersion := func(spec *servingpb.ModelSpec) (int64, error) {
		r, err := c.predict.Predict(ctx, &servingpb.PredictRequest{ModelSpec: spec, Inputs: features(t, []float32{1, 2, 3})})
		return r.GetModelSpec().GetVersion().GetValue(), err
	}

	t.Run("zero-padded name is its number", func(t *testing.T) {
		if err := os.Rename(exportTmp(t, base, linearSpec(123)), filepath.Join(base, "00000123")); err != nil {
			t.Fatal(err)
		}
		waitState(t, c, "m", 123, servingpb.ModelVersionStatus_AVAILABLE)
		if v, err := predictVersion(specV("m", 123)); err != nil || v != 123 {
			t.Errorf("Predict(version 123) = %d, %v; want 123", v, err)
		}
	})
	t.Run("non-numeric names are never loaded", func(t *testing.T) {
		for _, n := range []string{".tmp-500", "500.partial", "v500", "-500", "+500", "500 "} {
			if err := os.Rename(exportTmp(t, base, linearSpec(500)), filepath.Join(base, n)); err != nil {
				t.Fatal(err)
			}
		}
		// A later numeric version proves several polls happened after the others.
		export(t, base, 124, linearSpec(124))
		waitState(t, c, "m", 124, servingpb.ModelVersionStatus_AVAILABLE)
		waitState(t, c, "m", 123, servingpb.ModelVersionStatus_END)
		if _, err := c.model.GetModelStatus(ctx, &servingpb.GetModelStatusRequest{ModelSpec: specV("m", 500)}); status.Code(err) != codes.NotFound {
			t.Errorf("GetModelStatus(version 500) = %v; want NOT_FOUND, non-numeric names must never load", err)
		}
	})
	t.Run("broken spec ends in END with its error and keeps the old version", func(t *testing.T) {
		dir := exportTmp(t, base, linearSpec(200))
		if err := os.WriteFile(filepath.Join(dir, "assets.extra", "servingsim.json"), []byte(`{"format_version": 1, "kind": "linear",`), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(dir, filepath.Join(base, "200")); err != nil {
			t.Fatal(err)
		}
		st := waitState(t, c, "m", 200, servingpb.ModelVersionStatus_END)
		if codes.Code(st.GetStatus().GetErrorCode()) != codes.InvalidArgument || !strings.Contains(st.GetStatus().GetErrorMessage(), "servingsim.json") {
			t.Errorf("status of broken version: %v; want INVALID_ARGUMENT naming servingsim.json", st.GetStatus())
		}
		if v, err := predictVersion(&servingpb.ModelSpec{Name: "m"}); err != nil || v != 124 {
			t.Errorf("Predict(latest) with broken newest = %d, %v; want 124 (kept)", v, err)
		}
	})
	t.Run("missing spec and missing saved_model", func(t *testing.T) {
		dir := exportTmp(t, base, linearSpec(300))
		os.Remove(filepath.Join(dir, "assets.extra", "servingsim.json"))
		if err := os.Rename(dir, filepath.Join(base, "300")); err != nil {
			t.Fatal(err)
		}
		st := waitState(t, c, "m", 300, servingpb.ModelVersionStatus_END)
		if st.GetStatus().GetErrorCode() == 0 || !strings.Contains(st.GetStatus().GetErrorMessage(), "servingsim.json") {
			t.Errorf("status of version without spec: %v; want an error naming servingsim.json", st.GetStatus())
		}
		dir = exportTmp(t, base, linearSpec(400))
		os.Remove(filepath.Join(dir, "saved_model.pb"))
		if err := os.Rename(dir, filepath.Join(base, "400")); err != nil {
			t.Fatal(err)
		}
		st = waitState(t, c, "m", 400, servingpb.ModelVersionStatus_END)
		if codes.Code(st.GetStatus().GetErrorCode()) != codes.NotFound || st.GetStatus().GetErrorMessage() != "Could not find SavedModel .pb or .pbtxt at supplied export directory path: "+filepath.Join(base, "400") {
			t.Errorf("status of version without saved_model.pb: %v; want NOT_FOUND Could not find SavedModel", st.GetStatus())
		}
	})
}

var tmpSeq atomic.Int64

// exportTmp writes a version under a non-numeric temporary name and returns it.
func exportTmp(t *testing.T, base string, spec modelgen.Spec) string {
	t.Helper()
	dir := filepath.Join(base, ".tmp-export-"+itoa(tmpSeq.Add(1)))
	if err := modelgen.Export(dir, spec); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestNewVersionLoadsBeforeOldUnloads: while versions roll 1 -> 2 -> 3, requests
// for the latest version never fail.
func TestNewVersionLoadsBeforeOldUnloads(t *testing.T) {
	base := t.TempDir()
	export(t, base, 1, linearSpec(1))
	c := start(t, func(cfg *servingsim.Config) { cfg.ModelName, cfg.ModelBasePath = "m", base })
	ctx, cancel := context.WithCancel(ctxT(t))
	var wg sync.WaitGroup
	var failures, calls atomic.Int64
	var firstErr atomic.Value
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				_, err := c.predict.Predict(ctx, &servingpb.PredictRequest{ModelSpec: &servingpb.ModelSpec{Name: "m"}, Inputs: features(t, []float32{1, 2, 3})})
				if err != nil && ctx.Err() == nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
				calls.Add(1)
			}
		}()
	}
	for v := int64(2); v <= 3; v++ {
		export(t, base, v, linearSpec(v))
		waitState(t, c, "m", v, servingpb.ModelVersionStatus_AVAILABLE)
		waitState(t, c, "m", v-1, servingpb.ModelVersionStatus_END)
	}
	cancel()
	wg.Wait()
	if failures.Load() > 0 {
		t.Errorf("%d of %d Predict calls failed during the roll (first: %v); a new version must load before the old unloads", failures.Load(), calls.Load(), firstErr.Load())
	}
	if got, want := versionsIn(t, c, "m"), []string{"3:AVAILABLE", "2:END", "1:END"}; !slices.Equal(got, want) {
		t.Errorf("versions after the roll %v, want %v", got, want)
	}
}

func TestVersionRemovedFromDisk(t *testing.T) {
	base := t.TempDir()
	export(t, base, 1, linearSpec(1))
	v2 := export(t, base, 2, linearSpec(2))
	c := start(t, func(cfg *servingsim.Config) { cfg.ModelName, cfg.ModelBasePath = "m", base })
	if err := os.RemoveAll(v2); err != nil {
		t.Fatal(err)
	}
	// Version 1 is aspired again: it loads, then 2 unloads.
	waitState(t, c, "m", 1, servingpb.ModelVersionStatus_AVAILABLE)
	waitState(t, c, "m", 2, servingpb.ModelVersionStatus_END)
	if err := os.RemoveAll(filepath.Join(base, "1")); err != nil {
		t.Fatal(err)
	}
	waitState(t, c, "m", 1, servingpb.ModelVersionStatus_END)
	_, err := c.predict.Predict(ctxT(t), &servingpb.PredictRequest{ModelSpec: &servingpb.ModelSpec{Name: "m"}, Inputs: features(t, []float32{1, 2, 3})})
	if s := status.Convert(err); s.Code() != codes.NotFound || s.Message() != "Servable not found for request: Latest(m)" {
		t.Errorf("Predict with no versions on disk: %v, want NOT_FOUND Latest(m)", err)
	}
}

func TestLabelsAndReload(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	export(t, a, 1, linearSpec(1))
	export(t, a, 2, linearSpec(2))
	export(t, b, 5, textSpec(5))
	c := start(t, func(cfg *servingsim.Config) { cfg.ModelName, cfg.ModelBasePath = "a", a })
	ctx := ctxT(t)
	reload := func(cfg *servingpb.ModelServerConfig) error {
		_, err := c.model.HandleReloadConfigRequest(ctx, &servingpb.ReloadConfigRequest{Config: cfg})
		return err
	}
	predict := func(spec *servingpb.ModelSpec) (int64, error) {
		r, err := c.predict.Predict(ctx, &servingpb.PredictRequest{ModelSpec: spec, Inputs: features(t, []float32{1, 2, 3})})
		return r.GetModelSpec().GetVersion().GetValue(), err
	}
	// Step 1: both versions, no labels yet (a label cannot name a version that is
	// loading in the same change).
	ma := mc("a", a)
	ma.ModelVersionPolicy = policy("specific", 1, 2)
	if err := reload(list(ma)); err != nil {
		t.Fatalf("reload specific {1,2}: %v", err)
	}
	waitState(t, c, "a", 1, servingpb.ModelVersionStatus_AVAILABLE)
	// Step 2: labels onto AVAILABLE versions.
	ma.VersionLabels = map[string]int64{"stable": 1, "canary": 2}
	if err := reload(list(ma)); err != nil {
		t.Fatalf("reload with labels: %v", err)
	}
	for label, want := range map[string]int64{"stable": 1, "canary": 2} {
		if v, err := predict(specL("a", label)); err != nil || v != want {
			t.Errorf("Predict(label %s) = %d, %v; want %d", label, v, err, want)
		}
		md, err := c.predict.GetModelMetadata(ctx, &servingpb.GetModelMetadataRequest{ModelSpec: specL("a", label), MetadataField: []string{"signature_def"}})
		if err != nil || md.GetModelSpec().GetVersion().GetValue() != want {
			t.Errorf("GetModelMetadata(label %s) = %v, %v; want version %d", label, md.GetModelSpec(), err, want)
		}
	}
	// GetModelStatus ignores labels.
	st, err := c.model.GetModelStatus(ctx, &servingpb.GetModelStatusRequest{ModelSpec: specL("a", "stable")})
	if err != nil || len(st.GetModelVersionStatus()) != 2 {
		t.Errorf("GetModelStatus(label stable) = %v, %v; want both versions (labels ignored)", st, err)
	}
	// Step 3: add model b; the reload returns once b is AVAILABLE.
	if err := reload(list(ma, mc("b", b))); err != nil {
		t.Fatalf("reload adding b: %v", err)
	}
	if got := versionsIn(t, c, "b"); !slices.Equal(got, []string{"5:AVAILABLE"}) {
		t.Errorf("right after the reload returned, b is %v; want 5:AVAILABLE", got)
	}
	// Step 4: remove a; as in TF Serving the unload runs in the background after the
	// reload returns (UNLOADING for a moment), then its versions stay visible as END
	// and it no longer serves.
	if err := reload(list(mc("b", b))); err != nil {
		t.Fatalf("reload removing a: %v", err)
	}
	testwait.Until(t, "a's versions to reach END after its removal", func() bool {
		return slices.Equal(versionsIn(t, c, "a"), []string{"2:END", "1:END"})
	})
	if _, err := predict(&servingpb.ModelSpec{Name: "a"}); status.Code(err) != codes.NotFound {
		t.Errorf("Predict(a) after removal: %v, want NOT_FOUND", err)
	}
	if _, err := predict(specL("a", "stable")); status.Code(err) != codes.InvalidArgument {
		t.Errorf("Predict(a, label stable) after removal: %v, want INVALID_ARGUMENT (label gone)", err)
	}
	// Step 5: adding a model whose only version is broken fails the reload.
	broken := t.TempDir()
	dir := exportTmp(t, broken, linearSpec(1))
	os.WriteFile(filepath.Join(dir, "assets.extra", "servingsim.json"), []byte("{}"), 0o644)
	os.Rename(dir, filepath.Join(broken, "1"))
	err = reload(list(mc("b", b), mc("x", broken)))
	if s := status.Convert(err); s.Code() != codes.Unknown || !strings.HasPrefix(s.Message(), "1 model(s) did not become available: {{{name: x version: 1} due to error: INVALID_ARGUMENT: ") {
		t.Errorf("reload adding a broken model: %v; want UNKNOWN 1 model(s) did not become available", err)
	}
}

func TestLabelsAtStartup(t *testing.T) {
	a := t.TempDir()
	export(t, a, 1, linearSpec(1))
	cfgFile := filepath.Join(t.TempDir(), "models.config")
	writeConfig(t, cfgFile, list(withLabels(mc("a", a), "stable", 1)))
	cfg := servingsim.DefaultConfig()
	cfg.ModelConfigFile = cfgFile
	srv, err := servingsim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	err = srv.Serve(ctxT(t), lis)
	want := "Failed to start server. Error: FAILED_PRECONDITION: Request to assign label to version 1 of model a, which is not currently available for inference" + servingsim.LabelHint
	if err == nil || err.Error() != want {
		t.Errorf("Serve with a label at startup: %v; want %q (as TF Serving without --allow_version_labels_for_unavailable_models)", err, want)
	}
	c := start(t, func(cfg *servingsim.Config) {
		cfg.ModelConfigFile = cfgFile
		cfg.AllowVersionLabelsForUnavailableModels = true
	})
	r, err := c.predict.Predict(ctxT(t), &servingpb.PredictRequest{ModelSpec: specL("a", "stable"), Inputs: features(t, []float32{1, 2, 3})})
	if err != nil || r.GetModelSpec().GetVersion().GetValue() != 1 {
		t.Errorf("Predict(label stable) with the flag: %v, %v; want version 1", r.GetModelSpec(), err)
	}
}

func TestModelConfigFilePolling(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	export(t, a, 1, linearSpec(1))
	export(t, b, 4, linearSpec(4))
	cfgFile := filepath.Join(t.TempDir(), "models.config")
	writeConfig(t, cfgFile, list(mc("a", a)))
	c := start(t, func(cfg *servingsim.Config) {
		cfg.ModelConfigFile = cfgFile
		cfg.ModelConfigFilePollWait = 50 * time.Millisecond
	})
	// An invalid file is ignored; the current config keeps serving.
	if err := os.WriteFile(cfgFile, []byte("model_config_list { config { nme: 1 } }"), 0o644); err != nil {
		t.Fatal(err)
	}
	writeConfig(t, cfgFile, list(mc("a", a), mc("b", b)))
	waitState(t, c, "b", 4, servingpb.ModelVersionStatus_AVAILABLE)
	if got := versionsIn(t, c, "a"); !slices.Equal(got, []string{"1:AVAILABLE"}) {
		t.Errorf("a after config change: %v, want 1:AVAILABLE", got)
	}
}

// TestReloadWaitsForNewModels: a reload adding a model with no version on disk
// waits (here, until the caller's deadline); once a version is there it succeeds.
func TestReloadWaitsForNewModels(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	export(t, a, 1, linearSpec(1))
	c := start(t, func(cfg *servingsim.Config) { cfg.ModelName, cfg.ModelBasePath = "a", a })
	ctx, cancel := context.WithTimeout(ctxT(t), 300*time.Millisecond)
	defer cancel()
	_, err := c.model.HandleReloadConfigRequest(ctx, &servingpb.ReloadConfigRequest{Config: list(mc("a", a), mc("b", b))})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("reload adding an empty model: %v, want DEADLINE_EXCEEDED (it waits for a version)", err)
	}
	// The timed-out reload still applied the config (as TF Serving's does before
	// it waits): b is polled and its version loads once it appears.
	export(t, b, 2, linearSpec(2))
	waitState(t, c, "b", 2, servingpb.ModelVersionStatus_AVAILABLE)
	// Removing and re-adding b waits for it again, and succeeds at once.
	if _, err := c.model.HandleReloadConfigRequest(ctxT(t), &servingpb.ReloadConfigRequest{Config: list(mc("a", a))}); err != nil {
		t.Fatalf("reload removing b: %v", err)
	}
	if _, err := c.model.HandleReloadConfigRequest(ctxT(t), &servingpb.ReloadConfigRequest{Config: list(mc("a", a), mc("b", b))}); err != nil {
		t.Fatalf("reload re-adding b: %v", err)
	}
	if got := versionsIn(t, c, "b"); !slices.Equal(got, []string{"2:AVAILABLE"}) {
		t.Errorf("right after re-adding, b is %v, want 2:AVAILABLE", got)
	}
}

func TestStartupFailsOnBrokenModel(t *testing.T) {
	base := t.TempDir()
	dir := exportTmp(t, base, linearSpec(1))
	os.Remove(filepath.Join(dir, "saved_model.pb"))
	os.Rename(dir, filepath.Join(base, "1"))
	cfg := servingsim.DefaultConfig()
	cfg.ModelName, cfg.ModelBasePath = "m", base
	srv, err := servingsim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	err = srv.Serve(ctxT(t), lis)
	want := "Failed to start server. Error: UNKNOWN: 1 servable(s) did not become available: {{{name: m version: 1} due to error: NOT_FOUND: Could not find SavedModel .pb or .pbtxt at supplied export directory path: "
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Serve with only a broken version: %v; want prefix %q", err, want)
	}
	// An empty base path is not an error: versions may come later.
	empty := t.TempDir()
	c := start(t, func(cfg *servingsim.Config) { cfg.ModelName, cfg.ModelBasePath = "m", empty })
	export(t, empty, 3, linearSpec(3))
	waitState(t, c, "m", 3, servingpb.ModelVersionStatus_AVAILABLE)
}
