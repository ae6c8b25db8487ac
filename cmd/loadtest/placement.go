package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// placementCmd prints the gateway's ListPlacement: a table of model versions
// (state, assigned hosts, resident hosts, hosts with it in their disk cache,
// loading, required, held requests),
// the leader's problems, and with --explain each version's explanation; --json
// prints the response as JSON instead.
func placementCmd(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("loadtest placement", flag.ContinueOnError)
	addr := fs.String("addr", "", "gateway address (required)")
	model := fs.String("model", "", "only this model")
	asJSON := fs.Bool("json", false, "print the ListPlacement response as JSON")
	explain := fs.Bool("explain", false, "print each version's explanation under the table")
	timeout := fs.Duration("timeout", 30*time.Second, "call timeout")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cc, err := dialGateway(*addr)
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	resp, err := tfgatev1.NewGatewayServiceClient(cc).ListPlacement(ctx, &tfgatev1.ListPlacementRequest{Model: *model})
	if err != nil {
		return err
	}
	if *asJSON {
		_, err := fmt.Fprintln(out, protojson.Format(resp))
		return err
	}
	return writePlacement(out, resp, *explain)
}

func writePlacement(out io.Writer, resp *tfgatev1.ListPlacementResponse, explain bool) error {
	if !resp.GetEnabled() {
		_, err := fmt.Fprintln(out, "placement is off on this gateway (run it with --placement)")
		return err
	}
	leads := ""
	if resp.GetThisGatewayLeads() {
		leads = " (this gateway)"
	}
	fmt.Fprintf(out, "leader %s%s, report %.1fs old, %d versions, %d requests held for loads\n",
		or(resp.GetLeader(), "none yet"), leads, resp.GetReportAgeSeconds(), len(resp.GetVersions()), resp.GetColdWaiting())
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tVERSION\tSTATE\tASSIGNED\tRESIDENT\tCACHED\tLOADING\tREQUIRED\tHELD")
	for _, v := range resp.GetVersions() {
		var assigned []string
		for _, c := range v.GetAssigned() {
			h := c.GetHost()
			if c.GetDraining() {
				h += "(draining)"
			}
			assigned = append(assigned, h)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%v\t%s\t%d\n", v.GetModel(), v.GetVersion(), or(v.GetState(), "-"),
			or(strings.Join(assigned, ","), "-"), or(strings.Join(v.GetResident(), ","), "-"), or(strings.Join(v.GetCached(), ","), "-"),
			v.GetLoading(), or(v.GetRequired(), "-"), v.GetColdWaiting())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, p := range resp.GetProblems() {
		fmt.Fprintf(out, "problem: %s\n", p)
	}
	if explain {
		for _, v := range resp.GetVersions() {
			if v.GetWhy() != "" {
				fmt.Fprintf(out, "%s@%d: %s\n", v.GetModel(), v.GetVersion(), v.GetWhy())
			}
		}
	}
	return nil
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
