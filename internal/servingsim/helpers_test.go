package servingsim_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/tfgate/tfgate/internal/modelgen"
	"github.com/tfgate/tfgate/internal/servingsim"
	"github.com/tfgate/tfgate/internal/tensor"
	"github.com/tfgate/tfgate/internal/testenv"
	"github.com/tfgate/tfgate/internal/testwait"
	tfpb "github.com/tfgate/tfgate/proto/tensorflow"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

// clients is a connection to a servingsim over loopback TCP.
type clients struct {
	addr    string
	srv     *servingsim.Server
	predict servingpb.PredictionServiceClient
	model   servingpb.ModelServiceClient
	conn    *grpc.ClientConn
}

// start runs an in-process server over real TCP with fast polling.
func start(t *testing.T, mutate func(*servingsim.Config)) *clients {
	t.Helper()
	cfg := servingsim.DefaultConfig()
	cfg.FileSystemPollWait = 50 * time.Millisecond
	if mutate != nil {
		mutate(&cfg)
	}
	addr, srv := testenv.StartServingsimInProcess(t, cfg)
	return dial(t, addr, srv)
}

func dial(t *testing.T, addr string, srv *servingsim.Server) *clients {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &clients{addr: addr, srv: srv, conn: conn,
		predict: servingpb.NewPredictionServiceClient(conn), model: servingpb.NewModelServiceClient(conn)}
}

func dialB(b *testing.B, addr string) *grpc.ClientConn {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return conn
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// export writes a version under base/<v> atomically (temporary name, rename).
func export(t *testing.T, base string, v int64, spec modelgen.Spec) string {
	t.Helper()
	tmp := filepath.Join(base, ".tmp-"+strconv.FormatInt(v, 10))
	if err := modelgen.Export(tmp, spec); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(base, strconv.FormatInt(v, 10))
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
	return dst
}

func linearSpec(seed int64) modelgen.Spec {
	return modelgen.Spec{Kind: "linear", Features: 3, Classes: 2, Seed: seed}
}

func textSpec(seed int64) modelgen.Spec {
	return modelgen.Spec{Kind: "text-classifier", VocabSize: 200, MaxLen: 4, Classes: 3, EmbeddingDim: 5, Seed: seed}
}

func specV(name string, v int64) *servingpb.ModelSpec {
	return &servingpb.ModelSpec{Name: name, VersionChoice: &servingpb.ModelSpec_Version{Version: wrapperspb.Int64(v)}}
}

func specL(name, label string) *servingpb.ModelSpec {
	return &servingpb.ModelSpec{Name: name, VersionChoice: &servingpb.ModelSpec_VersionLabel{VersionLabel: label}}
}

func must(tp *tfpb.TensorProto, err error) *tfpb.TensorProto {
	if err != nil {
		panic(err)
	}
	return tp
}

func features(t *testing.T, rows ...[]float32) map[string]*tfpb.TensorProto {
	var flat []float32
	for _, r := range rows {
		flat = append(flat, r...)
	}
	return map[string]*tfpb.TensorProto{"features": must(tensor.FromFloat32(flat, int64(len(rows)), int64(len(rows[0]))))}
}

// waitState waits until GetModelStatus reports version v of name in state.
func waitState(t *testing.T, c *clients, name string, v int64, want servingpb.ModelVersionStatus_State) *servingpb.ModelVersionStatus {
	t.Helper()
	var got *servingpb.ModelVersionStatus
	testwait.UntilNil(t, fmt.Sprintf("model %s version %d to reach %v", name, v, want), func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := c.model.GetModelStatus(ctx, &servingpb.GetModelStatusRequest{ModelSpec: specV(name, v)})
		if err != nil {
			return err
		}
		if got = resp.GetModelVersionStatus()[0]; got.GetState() != want {
			return fmt.Errorf("%v", resp)
		}
		return nil
	})
	return got
}
