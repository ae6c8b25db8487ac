// Command fleetbench is the Go side of the fleet benchmark (scripts/bench-fleet.sh).
//
//	fleetbench gen     -out DIR -n 50000 -s3-endpoint URL -bucket B -consul ADDR ...
//	fleetbench watch   -consul ADDR -prefix P -out events.tsv     (until SIGTERM)
//	fleetbench analyze -dir DIR -trace trace.tsv ... > fleet.json
//
// gen draws the catalog (loadtest/fleet.Catalog: log-normal declared resident
// sizes), uploads one tiny tarball per model (a linear servingsim model whose
// servingsim.json declares the size) to S3, writes the placement catalog to
// Consul KV with object bytes = the declared size (the tarballs are a few KB, so
// the sidecars' own catalog listing is turned off: it would size every model by
// its tarball), and writes the gateway's routing models: section, its model root
// (one link per model to a shared version directory) and the workload.
//
// watch follows the placement assignment in KV (blocking queries, as the gateway
// does) and writes one line per copy added or removed, with the copy's Since, so
// that analyze can count loads, evictions and evictions younger than the minimum
// residency independently of the controller's own counters.
//
// analyze computes the oracle and random baselines (loadtest/fleet) over the
// recorded trace and puts them beside tfgate's numbers from the gateway's and
// Consul's metrics, the watch events and the servingsim hosts' metrics.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: fleetbench gen|watch|analyze [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "gen":
		err = gen(os.Args[2:])
	case "watch":
		err = watch(os.Args[2:])
	case "analyze":
		err = analyze(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q: want gen, watch or analyze", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleetbench:", err)
		os.Exit(1)
	}
}
