package main

import (
	"flag"

	"github.com/tfgate/tfgate/gateway"
	"github.com/tfgate/tfgate/placement"
)

// placementFlags declares --placement and its settings; the returned func gives
// the gateway.PlacementConfig after parsing (nil without --placement).
func placementFlags(fs *flag.FlagSet) func() *gateway.PlacementConfig {
	on := fs.Bool("placement", false, "run placement: a placement controller (one gateway leads, by a Consul lock), demand reports, and cold-start holding of requests for versions no host has (policy: the routing config's placement: section; pools: its backends' consul pools)")
	var pc gateway.PlacementConfig
	fs.StringVar(&pc.ID, "placement-id", "", "this gateway's name in the placement lock and its demand key (default: hostname-pid)")
	fs.StringVar(&pc.Store.Prefix, "placement-prefix", "tfgate", "Consul KV prefix of the placement state")
	fs.DurationVar(&pc.Interval, "placement-interval", placement.DefaultInterval, "longest time between the leader's placement decisions (demand reports decide sooner)")
	fs.BoolVar(&pc.RequireStatus, "placement-require-status", false, "freeze hosts whose sidecar has not reported its status recently: they keep their versions, take no new ones, and each of their versions gets its copies on live hosts (turn on once every host runs modelsync -placement)")
	return func() *gateway.PlacementConfig {
		if !*on {
			return nil
		}
		return &pc
	}
}
