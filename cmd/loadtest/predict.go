package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/tfgate/tfgate/internal/tensor"
	"github.com/tfgate/tfgate/loadtest"
	"github.com/tfgate/tfgate/loadtest/target"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// predictCmd sends one request drawn from a workload (model, instances, raw
// tensors), with the route and key overridable by flags, and prints what served it
// and the outputs: a smoke test and the demo's way to show predictions.
func predictCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("loadtest predict", flag.ContinueOnError)
	kind := fs.String("target", "gateway", "gateway or tfserving")
	addr := fs.String("addr", "", "target address (required)")
	wlPath := fs.String("workload", "", "workload YAML; the request is its first draw (required)")
	model := fs.String("model", "", "override the model")
	version := fs.Int64("version", 0, "pin this version")
	label := fs.String("label", "", "use this version label")
	key := fs.String("routing-key", "", "routing key (gateway)")
	text := fs.String("text", "", "override every instance's text (gateway)")
	full := fs.Bool("json", false, "print the whole response as JSON")
	dump := fs.String("dump", "", "write the serialized request to this file and send nothing (for ghz --binary-file)")
	timeout := fs.Duration("timeout", 10*time.Second, "deadline")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if (*addr == "" && *dump == "") || *wlPath == "" {
		return errors.New("--addr (or --dump) and --workload are required")
	}
	f, err := os.Open(*wlPath)
	if err != nil {
		return err
	}
	wl, err := loadtest.ParseWorkload(f)
	f.Close()
	if err != nil {
		return err
	}
	r := loadtest.NewGenerator(wl, 0).Next()
	if *model != "" {
		r.Model = *model
	}
	r.Version, r.Label, r.RoutingKey = *version, *label, *key
	if *text != "" {
		for i := range r.Instances {
			r.Instances[i].Text = *text
		}
	}
	if *dump != "" {
		var m proto.Message = target.TFServingRequest(r, "")
		if *kind == "gateway" {
			m = target.GatewayRequest(r, 0)
		}
		b, err := proto.Marshal(m)
		if err != nil {
			return err
		}
		return os.WriteFile(*dump, b, 0o644)
	}
	cc, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	switch *kind {
	case "gateway":
		resp, err := tfgatev1.NewGatewayServiceClient(cc).Predict(ctx, target.GatewayRequest(r, 0))
		if err != nil {
			return err
		}
		if *full {
			fmt.Println(protojson.Format(resp))
			return nil
		}
		if e := resp.GetEnsemble(); e != nil {
			printEnsemble(resp, e)
			return nil
		}
		fmt.Printf("model=%s version=%d arm=%q experiment=%q route=%s", resp.GetModel(), resp.GetVersion(), resp.GetArm(), resp.GetExperiment(), resp.GetRoute())
		printTop(resp.GetPredictions())
		fmt.Println()
	case "tfserving":
		resp, err := servingpb.NewPredictionServiceClient(cc).Predict(ctx, target.TFServingRequest(r, ""))
		if err != nil {
			return err
		}
		if *full {
			fmt.Println(protojson.Format(resp))
			return nil
		}
		fmt.Printf("model=%s version=%d", resp.GetModelSpec().GetName(), resp.GetModelSpec().GetVersion().GetValue())
		if s := resp.GetOutputs()["scores"]; s != nil {
			v, err := tensor.AsFloat64s(s)
			if err != nil {
				return fmt.Errorf("scores output: %w", err)
			}
			fmt.Print(" scores=[")
			for i, x := range v {
				if i > 0 {
					fmt.Print(" ")
				}
				fmt.Printf("%.4f", x)
			}
			fmt.Print("]")
		}
		fmt.Println()
	default:
		return fmt.Errorf("--target %q: want gateway or tfserving", *kind)
	}
	return nil
}

// printTop prints each prediction's best class and score.
func printTop(preds []*tfgatev1.Prediction) {
	for i, p := range preds {
		best, bestScore := "", float32(-1)
		for _, s := range p.GetScores() {
			if s.GetScore() > bestScore {
				best, bestScore = s.GetLabel(), s.GetScore()
			}
		}
		fmt.Printf(" [%d] top=%s %.4f", i, best, bestScore)
	}
}

// printEnsemble prints an ensemble's combined predictions, then one line per
// member: what served it and its own predictions, or why it failed.
func printEnsemble(resp *tfgatev1.PredictResponse, e *tfgatev1.EnsembleResult) {
	fmt.Printf("ensemble=%s combiner=%s partial=%v combined:", e.GetName(), e.GetCombiner(), e.GetPartial())
	printTop(resp.GetPredictions())
	fmt.Println()
	for _, m := range e.GetMembers() {
		fmt.Printf("  member=%s model=%s version=%d arm=%q", m.GetMember(), m.GetModel(), m.GetVersion(), m.GetArm())
		if m.GetCode() != 0 {
			fmt.Printf(" failed: %s\n", m.GetError())
			continue
		}
		printTop(m.GetPredictions())
		fmt.Println()
	}
}
