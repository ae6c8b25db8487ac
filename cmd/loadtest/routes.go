package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// routesCmd prints the gateway's ListRoutes as JSON; with --wait-model it first
// waits until that model's listed versions (and every experiment arm) are routable.
func routesCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("loadtest routes", flag.ContinueOnError)
	addr := fs.String("addr", "", "gateway address (required)")
	model := fs.String("model", "", "only this model")
	waitModel := fs.String("wait-model", "", "wait until this model's arms and --wait-versions are routable")
	var versions int64List
	fs.Var(&versions, "wait-versions", "comma-separated versions that must be routable (with --wait-model)")
	waitArm := fs.String("wait-arm-weight", "", "also wait until an arm has this weight, as ARM=WEIGHT")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait")
	waitAll := fs.Bool("wait-all", false, "wait until every model has a routable version")
	quiet := fs.Bool("quiet", false, "print a one-line summary instead of the JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cc, err := dialGateway(*addr)
	if err != nil {
		return err
	}
	defer cc.Close()
	c := tfgatev1.NewGatewayServiceClient(cc)
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	var armName string
	var armWeight float64
	if *waitArm != "" {
		name, w, ok := strings.Cut(*waitArm, "=")
		v, err := strconv.ParseFloat(w, 64)
		if !ok || name == "" || err != nil {
			return fmt.Errorf("--wait-arm-weight %q: want ARM=WEIGHT", *waitArm)
		}
		armName, armWeight = name, v
	}
	var last string
	for {
		start := time.Now()
		resp, err := c.ListRoutes(ctx, &tfgatev1.ListRoutesRequest{Model: *model})
		// Poll every 250 ms, or less often when a call is expensive: at 50,000
		// models one ListRoutes costs the gateway tens of milliseconds, and polling
		// back to back took a sixth of its CPU while it was starting up.
		wait := max(250*time.Millisecond, 4*time.Since(start))
		if err == nil {
			ok, why := true, ""
			if *waitModel != "" {
				ok, why = ready(resp, *waitModel, versions, armName, armWeight)
			}
			if ok && *waitAll {
				ok, why = allRoutable(resp)
			}
			if ok {
				if *quiet {
					_, why := allRoutable(resp)
					fmt.Printf("%d models, config generation %d; %s\n", len(resp.GetModels()), resp.GetConfigGeneration(), why)
				} else {
					fmt.Println(protojson.Format(resp))
				}
				return nil
			}
			last = why
		} else {
			last = err.Error()
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("gave up waiting for %s: %s", *waitModel, last)
		case <-t.C:
		}
	}
}

func ready(resp *tfgatev1.ListRoutesResponse, model string, versions []int64, arm string, weight float64) (bool, string) {
	for _, m := range resp.GetModels() {
		if m.GetModel() != model {
			continue
		}
		routable := map[int64]bool{}
		for _, v := range m.GetVersions() {
			routable[v.GetVersion()] = v.GetRoutable()
		}
		for _, v := range versions {
			if !routable[v] {
				return false, fmt.Sprintf("version %d not routable yet", v)
			}
		}
		for _, a := range m.GetExperiment().GetArms() {
			if !a.GetRoutable() {
				return false, fmt.Sprintf("arm %s (version %d) not routable: %s", a.GetName(), a.GetVersion(), a.GetReason())
			}
			if a.GetName() == arm && a.GetWeight() != weight {
				return false, fmt.Sprintf("arm %s has weight %g, waiting for %g", arm, a.GetWeight(), weight)
			}
		}
		return true, ""
	}
	return false, "model " + model + " not listed"
}

// allRoutable reports whether every model has a routable version, and how many do.
func allRoutable(resp *tfgatev1.ListRoutesResponse) (bool, string) {
	n := 0
	for _, m := range resp.GetModels() {
		for _, v := range m.GetVersions() {
			if v.GetRoutable() {
				n++
				break
			}
		}
	}
	return n == len(resp.GetModels()), fmt.Sprintf("%d of %d models routable", n, len(resp.GetModels()))
}

type int64List []int64

func (l *int64List) String() string { return fmt.Sprint([]int64(*l)) }

func (l *int64List) Set(s string) error {
	for _, part := range strings.Split(s, ",") {
		v, err := strconv.ParseInt(strings.TrimSpace(part), 10, 64)
		if err != nil {
			return fmt.Errorf("version %q: %w", part, err)
		}
		*l = append(*l, v)
	}
	return nil
}

// dialGateway connects to a gateway's introspection RPCs (ListRoutes,
// ListPlacement), whose answers can be large at 50,000 models.
func dialGateway(addr string) (*grpc.ClientConn, error) {
	if addr == "" {
		return nil, errors.New("--addr is required")
	}
	return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30)))
}
