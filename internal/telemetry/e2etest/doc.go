// Package e2etest checks tfgate's telemetry end to end: a gateway in front of an
// in-process servingsim, both on loopback TCP, run by gateway.Run exactly as
// cmd/gateway runs it (Deps.Telemetry for the providers, interceptors and stats
// handlers; Run's own admin server and TLS sources), plus an in-memory span
// exporter. It holds tests only.
//
// It also keeps docs/metrics.md honest: every metric family the gateway
// exports after traffic must be documented there.
package e2etest
