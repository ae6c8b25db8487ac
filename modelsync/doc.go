// Package modelsync is the sidecar that publishes model versions from S3 into a TF
// Serving model base path (or, in gateway mode, a gateway's preprocessing spec
// directory) when S3 event notifications arrive on SQS.
//
// Invariants:
//   - Atomic models (architecture invariant 4): versions are extracted by the extract
//     package into a non-numeric temporary directory and published by the store package
//     with fsync + rename + fsync of the parent; a poller never sees a partial version.
//   - Nothing lost (invariant 5): a message is deleted only after every model version it
//     names is published, found already published from the same object, or found to be
//     impossible (rejected archive, object gone, conflicting republish), and every such
//     outcome is journaled with its reason. Transient failures and abandoned work leave
//     the message on the queue (visible again after RetryDelay, or at once on shutdown)
//     for redelivery and, after the queue's maxReceiveCount, its dead-letter queue.
//   - Bounded (invariant 6): MaxInFlight messages and catch-up jobs are held at once,
//     Concurrency versions are fetched at once, bodies, objects and archives have size
//     limits; memory does not grow with model size (downloads stream through the
//     extractor).
//   - Versions of one model are processed one at a time, lowest version first among
//     those waiting; different models proceed in parallel.
//
// Modes: in serving mode whole versions go to a TF Serving model base path, and (outside
// placement mode) a model new to the host is added to TF Serving with HandleReloadConfigRequest (package
// reload). In gateway mode only Include (assets/, assets.extra/) of each version is
// extracted into a gateway's preprocessing spec directory, so gateways never download
// weights. With no queue and CatchUpInterval 0, Run is a one-shot sync.
//
// Placement mode (Config.Placement, placement.go): the base path holds exactly the
// host's assignment in Consul KV (package placement), not every model in the bucket.
//   - The assignment is watched with placement.Store.WatchHost. Until one arrives, and
//     while Consul is unreachable or answers with no assignment, the last known one
//     stands: nothing is fetched for lack of it and nothing is unloaded (architecture
//     invariant 8). Notifications are acknowledged and journaled as ignored when their
//     version is not assigned (or no assignment is known yet): what is assigned later
//     is fetched then, so none is lost.
//   - Assigned versions missing from disk are found by listing the model's keys and
//     fetched as jobs through the same scheduler and pipeline as notifications (same
//     slots, workers, verification, atomic publish); a rejected archive is not
//     fetched again and is reported as a failure.
//   - TF Serving's model config names exactly the assigned versions that are on disk,
//     each model with a specific version policy (reload.Reloader.Set), so a cached
//     version is never loaded; a model with none on disk yet is left out, since the
//     reload would block until it loaded. Reloads run one at a time in their own
//     goroutine, each bounded by ReloadTimeout, so a reload TF Serving holds (a long
//     load) stops neither fetching nor the status heartbeat; after a failure or
//     timeout the config is resent with backoff (TF Serving then no longer waits for
//     models it has), a version still not AVAILABLE after ReloadTimeout is reported
//     as a failure, and no version named by a reload under way is deleted.
//   - A version taken off the host (AVAILABLE, in the config) drains: it stays in the
//     config for UnloadDelay, so that gateways, which stop routing it here when they
//     see the assignment change, have done so before it unloads; the drain ends early
//     while a version of the config is not yet AVAILABLE (the controller counts the
//     removed copy's memory as free, and the load must find it).
//   - Unassigned versions stay on disk as a cache of at most CacheBytes, the least
//     recently assigned leaving first, and a version's files are deleted only after
//     GetModelStatus reports it END or unknown: never under a loaded model.
//   - The host's status (what TF Serving reports AVAILABLE, with load seconds; bytes
//     on disk; failures with reasons and a FailureBackoff; the unassigned, unloaded
//     versions of the disk cache, most recently unassigned first) is written with
//     placement.Store.PutStatus when it changed, at most once per PollInterval, and
//     every StatusInterval as a heartbeat. Catch-up, instead of fetching, writes the
//     catalog (every version in the bucket and its object size) with
//     placement.Store.WriteCatalog, check-and-set; an unchanged catalog writes nothing.
//
// Concurrency: Run owns every goroutine it starts and returns only after all of them
// have ended. Receivers, a heartbeat that extends the visibility of in-flight messages,
// the catch-up loop, one goroutine per model with queued work, and in placement mode
// one reconcile loop (which alone decides the model config and deletes versions) with
// its assignment watcher and its reloader.
package modelsync
