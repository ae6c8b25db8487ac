package main

import (
	"compress/gzip"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tfgate/tfgate/gateway/route"
	"github.com/tfgate/tfgate/loadtest"
	"github.com/tfgate/tfgate/loadtest/report"
	"github.com/tfgate/tfgate/loadtest/stats"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// exposureCmd reads gateway exposure logs and prints the split per experiment
// with the harness's SRM test:
//
//	loadtest exposure [--config routes.yaml | --addr gw:9500] [--from T] [--to T] [--json F] FILE...
func exposureCmd(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("loadtest exposure", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "routing config the arms' weights come from")
	addr := fs.String("addr", "", "gateway whose ListRoutes gives the arms' weights (instead of --config)")
	from := fs.String("from", "", "only records at or after this time (RFC 3339)")
	to := fs.String("to", "", "only records before this time (RFC 3339)")
	jsonOut := fs.String("json", "", "also write the summary as JSON to this file")
	name := fs.String("name", "exposure log", "title of the summary")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("name at least one exposure log file (- for stdin; .gz files are decompressed)")
	}
	var w loadtest.ExposureWindow
	for _, b := range []struct {
		flag, v string
		t       *time.Time
	}{{"--from", *from, &w.From}, {"--to", *to, &w.To}} {
		if b.v == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, b.v)
		if err != nil {
			return fmt.Errorf("%s %q: want an RFC 3339 time like 2026-12-03T07:00:00Z", b.flag, b.v)
		}
		*b.t = t
	}
	weights, err := exposureWeights(ctx, *cfgPath, *addr)
	if err != nil {
		return err
	}
	rec := stats.NewRecorder()
	var read loadtest.ExposureRead
	for _, path := range fs.Args() {
		if err := readExposureFile(path, rec, w, &read); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	s := stats.Summarize(rec, weights, read.Last.Sub(read.First))
	s.Name, s.Target, s.Mode = *name, "exposure log "+strings.Join(fs.Args(), " "), "log"
	fmt.Fprintf(stdout, "%d records from %s to %s (%d outside the window)\n", read.Records, read.First.Format(time.RFC3339), read.Last.Format(time.RFC3339), read.Outside)
	if err := report.Text(stdout, s); err != nil {
		return err
	}
	if *jsonOut != "" {
		return writeFile(*jsonOut, func(w io.Writer) error { return report.JSON(w, s) })
	}
	return nil
}

func readExposureFile(path string, rec *stats.Recorder, w loadtest.ExposureWindow, into *loadtest.ExposureRead) error {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
		if strings.HasSuffix(path, ".gz") {
			zr, err := gzip.NewReader(f)
			if err != nil {
				return err
			}
			defer zr.Close()
			r = zr
		}
	}
	return loadtest.ReadExposures(r, rec, w, into)
}

// exposureWeights are the configured arm weights per experiment
// (loadtest.ExperimentModel), from a routing config or a gateway's ListRoutes;
// nil without either (the split is shown untested).
func exposureWeights(ctx context.Context, cfgPath, addr string) (map[string]map[string]float64, error) {
	out := map[string]map[string]float64{}
	switch {
	case cfgPath != "" && addr != "":
		return nil, errors.New("give --config or --addr, not both")
	case cfgPath != "":
		cfg, err := route.Load(cfgPath, nil)
		if err != nil {
			return nil, err
		}
		for name, m := range cfg.Models {
			if x := m.Experiment; x != nil {
				ws := map[string]float64{}
				for _, a := range x.Arms {
					ws[a.Name] = a.Weight
				}
				out[loadtest.ExperimentModel(name, x.Name)] = ws
			}
		}
	case addr != "":
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, err
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		resp, err := tfgatev1.NewGatewayServiceClient(cc).ListRoutes(ctx, &tfgatev1.ListRoutesRequest{})
		if err != nil {
			return nil, fmt.Errorf("list routes at %s: %w", addr, err)
		}
		for _, m := range resp.GetModels() {
			if x := m.GetExperiment(); len(x.GetArms()) > 0 {
				ws := map[string]float64{}
				for _, a := range x.GetArms() {
					ws[a.GetName()] = a.GetWeight()
				}
				out[loadtest.ExperimentModel(m.GetModel(), x.GetName())] = ws
			}
		}
	default:
		return nil, nil
	}
	return out, nil
}
