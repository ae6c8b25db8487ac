// Package exposure writes the gateway's exposure log: one JSON line per Predict
// that resolved a model version, saying which experiment arm and version the
// caller was exposed to, so that an experiment can be analysed (and its split
// checked, `loadtest exposure`) from what production really served.
//
// A [Log] is a bounded asynchronous writer. [Log.Expose] is called on the
// request path: it copies the record into a fixed-size queue and returns; it
// never blocks, never does I/O and does not allocate. When the queue is full
// the record is dropped and counted (tfgate.exposure.dropped, reason
// buffer_full); a write that fails (a full disk) drops its records the same way
// (reason write_error). Drops are logged at most once per
// [Config.DropLogInterval]. One goroutine encodes, hashes routing keys
// ([Config.HashKeys]) and writes in batches, to stdout or to a file rotated by
// size (gopkg.in/natefinch/lumberjack.v2).
//
// # Invariants
//
//   - The request path never waits for the log: Expose is a non-blocking send.
//   - Every record Expose accepted before [Log.Close] is written before Close
//     returns (or counted as dropped when its write failed): records survive a
//     graceful shutdown.
//   - An exposure log that cannot be opened for writing fails [New] (at start),
//     with the path and what to fix.
//   - With HashKeys, a raw routing key never reaches the output: it is replaced
//     by the first 16 bytes (hex) of HMAC-SHA256 under the configured secret, so
//     the same key hashes the same on every gateway that shares the secret.
//
// # Concurrency
//
// Expose is safe for concurrent use and may race with Close: a record that
// arrives after Close began is dropped (reason closed), never written to a
// closed file. [New] starts the writer goroutine; Close stops it.
package exposure
