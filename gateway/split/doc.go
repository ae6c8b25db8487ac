// Package split watches experiment assignment live, so that a sample ratio
// mismatch (SRM) raises an alert while the experiment runs rather than when
// someone analyses it.
//
// A [Monitor] is an [exposure.Sink]: for every experiment-routed request it
// counts, per (model, experiment, arm), the assignments and the distinct
// routing keys (a HyperLogLog sketch, github.com/axiomhq/hyperloglog, fixed
// memory), and keeps a sliding window (Options.Window in Options.Slots time
// slots) of randomization units: keyless requests, and a uniform sample of
// the distinct routing keys. [Monitor.Check] runs the chi-square goodness-of-fit
// test of loadtest/stats (the one the load-test reports use) of the window's
// units against the arms' expected shares; it is exported as a gauge.
//
// # Why units, not requests
//
// Assignment is sticky by key: every request of a key goes to the same arm, so
// request counts are not independent trials and a few heavy customers move the
// request split far more than chance allows; a chi-square over requests would
// fire on a fair experiment. Each distinct key, and each keyless request, is
// one independent trial. Exact distinct keys would need memory proportional to
// the keys seen, and HyperLogLog's percent-level error is far above what the test can
// tolerate at large n, so the window keeps, per slot, the keys whose hash
// (xxhash, independent of the assignment hash) falls below a threshold that
// halves whenever the slot holds more than Options.SampleKeys keys (distinct
// sampling). The sample is independent of the arm, so its per-arm counts are
// a fair multinomial sample: the test stays exact, memory stays bounded.
//
// # Invariants
//
//   - Expected shares come from the routing snapshot (the arms' effective
//     shares: an unroutable arm's share moves to the others). When they change
//     (a weight shift, an arm going unroutable) the window restarts, so it
//     never mixes two splits.
//   - Counters (assignments, distinct keys) are cumulative since the gateway
//     started and never reset.
//
// # Concurrency
//
// Expose is safe for concurrent use, does not block on I/O and takes one
// short per-experiment mutex. Check and the metrics callback may run
// concurrently with Expose.
package split
