// Package loadtest drives load at a gRPC model-serving target and records what
// came back: the harness behind cmd/loadtest and `make bench`.
//
// Two load models:
//   - Open loop (Config.Mode "open"): requests are due at intended times from an
//     Arrivals process (fixed rate or Poisson). Latency is measured from the
//     intended time, not from when the request was actually sent, so a slow target
//     cannot slow the generator down and hide its own latency (no coordinated
//     omission). At most Config.MaxInFlight requests are outstanding; when the bound
//     is reached, later requests are sent late and their lateness counts as latency.
//   - Closed loop ("closed"): Config.Concurrency workers each send the next request
//     when the previous one returns; latency is from the actual send.
//
// Requests whose intended (open) or actual (closed) send time falls in the warm-up
// are sent but not recorded. A run ends after Config.Duration of measurement or
// after Config.Requests measured requests, whichever is set, and then waits for
// outstanding requests (each bounded by its deadline).
//
// Requests come from a Workload (YAML, see ParseWorkload): models by weight, a mix
// of explicit versions, labels and default routes, Zipf-distributed routing keys,
// and instance contents drawn from distributions. A Generator turns it into
// Requests deterministically from the workload's seed. A family of per-customer
// models (Model.Count) with routing keys over as many customers is a Zipf law over
// the models; Config.Trace records the model of every request (warm-up included)
// so that offline baselines (loadtest/fleet) replay exactly the same requests.
//
// Concurrency: Run owns all goroutines it starts and returns only after they exit.
// A Target must be safe for concurrent use. Results are recorded into a few
// mutex-guarded stats.Recorder shards, merged at the end.
package loadtest
