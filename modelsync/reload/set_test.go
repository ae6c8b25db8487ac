package reload

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tfgate/tfgate/internal/modelgen"
	"github.com/tfgate/tfgate/internal/servingsim"
	"github.com/tfgate/tfgate/internal/servingsim/model"
	"github.com/tfgate/tfgate/internal/testenv"
	"github.com/tfgate/tfgate/internal/testwait"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

// versionState is what servingsim reports for one version (UNKNOWN when it does
// not know the version).
func versionState(t *testing.T, ms servingpb.ModelServiceClient, name string, v int64) servingpb.ModelVersionStatus_State {
	t.Helper()
	st, err := ms.GetModelStatus(context.Background(), &servingpb.GetModelStatusRequest{ModelSpec: &servingpb.ModelSpec{
		Name: name, VersionChoice: &servingpb.ModelSpec_Version{Version: wrapperspb.Int64(v)}}})
	if err != nil || len(st.GetModelVersionStatus()) != 1 {
		return servingpb.ModelVersionStatus_UNKNOWN
	}
	return st.GetModelVersionStatus()[0].GetState()
}

// configVersions reads the file back as model -> versions of its specific policy.
func configVersions(t *testing.T, file string) map[string][]int64 {
	t.Helper()
	cfg, err := ReadConfig(file)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]int64{}
	for _, mc := range cfg.GetModelConfigList().GetConfig() {
		out[mc.GetName()] = mc.GetModelVersionPolicy().GetSpecific().GetVersions()
	}
	return out
}

// TestSetExactly: Set makes servingsim serve exactly the named versions, even
// with other versions on disk; removed models and versions unload; an identical
// set sends nothing; a set whose new model cannot load fails within its deadline,
// leaves the file alone, and the next set resends.
func TestSetExactly(t *testing.T) {
	base := t.TempDir()
	for _, mv := range []struct {
		m string
		v int64
	}{{"a", 1}, {"a", 2}, {"a", 3}, {"b", 1}} {
		if err := modelgen.Export(filepath.Join(base, mv.m, fmt.Sprint(mv.v)), modelgen.Spec{Kind: model.KindLinear, Seed: mv.v}); err != nil {
			t.Fatal(err)
		}
	}
	// "broken" has a version directory that does not load.
	if err := os.MkdirAll(filepath.Join(base, "broken", "1"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(t.TempDir(), "models.config")
	os.WriteFile(cfgFile, []byte("model_config_list {}\n"), 0o644)
	scfg := servingsim.DefaultConfig()
	scfg.Port, scfg.ModelConfigFile, scfg.FileSystemPollWait = 0, cfgFile, 50*time.Millisecond
	addr, _ := testenv.StartServingsimInProcess(t, scfg)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ms := servingpb.NewModelServiceClient(conn)
	r, err := New(ms, cfgFile, base)
	if err != nil {
		t.Fatal(err)
	}
	avail, end := servingpb.ModelVersionStatus_AVAILABLE, servingpb.ModelVersionStatus_END
	unknown := servingpb.ModelVersionStatus_UNKNOWN

	steps := []struct {
		name     string
		set      []Model
		wantSent bool
		// want maps model@version to the state servingsim must come to report.
		want     map[string]servingpb.ModelVersionStatus_State
		wantFile map[string][]int64
	}{
		{
			name: "one version of a, not the others on disk", set: []Model{{Name: "a", Versions: []int64{2}}}, wantSent: true,
			want:     map[string]servingpb.ModelVersionStatus_State{"a@2": avail, "a@1": unknown, "a@3": unknown},
			wantFile: map[string][]int64{"a": {2}},
		},
		{
			name: "two versions of a and b", set: []Model{{Name: "b", Versions: []int64{1}}, {Name: "a", Versions: []int64{3, 2}}}, wantSent: true,
			want:     map[string]servingpb.ModelVersionStatus_State{"a@2": avail, "a@3": avail, "b@1": avail, "a@1": unknown},
			wantFile: map[string][]int64{"a": {2, 3}, "b": {1}},
		},
		{
			name: "same set: nothing sent", set: []Model{{Name: "a", Versions: []int64{2, 3}}, {Name: "b", Versions: []int64{1}}},
			want:     map[string]servingpb.ModelVersionStatus_State{"a@2": avail, "a@3": avail, "b@1": avail},
			wantFile: map[string][]int64{"a": {2, 3}, "b": {1}},
		},
		{
			name: "a removed, a version of b dropped to none: both unload", set: []Model{{Name: "b"}}, wantSent: true,
			want:     map[string]servingpb.ModelVersionStatus_State{"a@2": end, "a@3": end, "b@1": end},
			wantFile: map[string][]int64{},
		},
	}
	for _, tc := range steps {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout)
			defer cancel()
			sent, err := r.Set(ctx, tc.set)
			if err != nil || sent != tc.wantSent {
				t.Fatalf("Set(%v) = %v, %v; want sent %v, no error", tc.set, sent, err, tc.wantSent)
			}
			for mv, want := range tc.want {
				m, vs, _ := strings.Cut(mv, "@")
				v, _ := strconv.ParseInt(vs, 10, 64)
				testwait.Until(t, fmt.Sprintf("%s %v", mv, want), func() bool { return versionState(t, ms, m, v) == want })
			}
			got := configVersions(t, cfgFile)
			if len(got) != len(tc.wantFile) {
				t.Fatalf("config file holds %v, want %v", got, tc.wantFile)
			}
			for m, vs := range tc.wantFile {
				if !slices.Equal(got[m], vs) {
					t.Errorf("config file: %s -> %v, want %v", m, got[m], vs)
				}
			}
		})
	}

	t.Run("a model that cannot load: error, file unchanged, resent next time", func(t *testing.T) {
		before, _ := os.ReadFile(cfgFile)
		set := []Model{{Name: "b", Versions: []int64{1}}, {Name: "broken", Versions: []int64{1}}}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := r.Set(ctx, set); err == nil {
			t.Fatalf("Set with a model that cannot load: no error")
		}
		if after, _ := os.ReadFile(cfgFile); string(after) != string(before) {
			t.Errorf("a failed reload rewrote the config file:\n%s", after)
		}
		// TF Serving holds the config now; resent, broken is no longer new and
		// the call returns (servingsim, like TF Serving, waits only for added models).
		sent, err := r.Set(ctx, set)
		if !sent || err != nil {
			t.Fatalf("second Set = %v, %v; want it resent and accepted", sent, err)
		}
		if got := configVersions(t, cfgFile); !slices.Equal(got["broken"], []int64{1}) || !slices.Equal(got["b"], []int64{1}) {
			t.Errorf("config file %v", got)
		}
	})

	t.Run("deadline: a reload that never returns is cut off", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		// "missing" has no version on disk: servingsim waits for it forever.
		_, err := r.Set(ctx, []Model{{Name: "missing", Versions: []int64{1}}})
		if status.Code(errors.Unwrap(err)) != codes.DeadlineExceeded {
			t.Fatalf("Set = %v; want the deadline to end it", err)
		}
	})
}
