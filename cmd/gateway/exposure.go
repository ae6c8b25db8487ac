package main

import (
	"flag"
	"strconv"

	"github.com/tfgate/tfgate/gateway"
	"github.com/tfgate/tfgate/gateway/exposure"
)

// exposureFlags defines the --exposure-* flags (and --split-window) on fs. Any of them turns the
// exposure log on (cfg.Exposure); gateway.Run then requires --exposure-log and
// fails at start when it cannot be written.
func exposureFlags(fs *flag.FlagSet, cfg *gateway.RunConfig) {
	x := func() *exposure.Config {
		if cfg.Exposure == nil {
			cfg.Exposure = &exposure.Config{}
		}
		return cfg.Exposure
	}
	intFlag := func(dst func(*exposure.Config) *int) func(string) error {
		return func(s string) error {
			n, err := strconv.Atoi(s)
			if err == nil {
				*dst(x()) = n
			}
			return err
		}
	}
	fs.Func("exposure-log", "write one JSON line per routed Predict (time, request and trace id, model, experiment, arm, version, route, routing key, code, latency) to this file, or - for stdout; default: no exposure log", func(s string) error {
		x().Path = s
		return nil
	})
	fs.Func("exposure-max-size-mb", "rotate the exposure log at this size, MiB (default 100)", intFlag(func(c *exposure.Config) *int { return &c.MaxSizeMB }))
	fs.Func("exposure-max-backups", "rotated exposure log files kept (default 10)", intFlag(func(c *exposure.Config) *int { return &c.MaxBackups }))
	fs.Func("exposure-max-age-days", "remove rotated exposure log files older than this (default: no limit)", intFlag(func(c *exposure.Config) *int { return &c.MaxAgeDays }))
	fs.Func("exposure-buffer", "exposure records queued for the writer before new ones are dropped (default 16384)", intFlag(func(c *exposure.Config) *int { return &c.Buffer }))
	fs.BoolFunc("exposure-compress", "gzip rotated exposure log files", func(s string) error {
		b, err := strconv.ParseBool(s)
		x().Compress = b
		return err
	})
	fs.DurationVar(&cfg.SplitWindow, "split-window", 0, "sliding window of the live SRM test of each experiment (tfgate_experiment_srm_p_value; default 10m)")
	fs.Func("exposure-hash-secret-file", "write key_hash, an HMAC-SHA256 of the routing key under the secret in this file (at least 16 bytes; share it across gateways), instead of the raw key", func(path string) error {
		secret, err := exposure.ReadSecret(path)
		if err != nil {
			return err
		}
		c := x()
		c.HashKeys, c.HashSecret = true, secret
		return nil
	})
}
