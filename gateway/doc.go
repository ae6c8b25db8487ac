// Package gateway is tfgate's gRPC front end: the typed tfgate.v1.GatewayService
// (Predict and ListRoutes), the standard gRPC health service and server reflection.
//
// A Predict resolves its target to one explicit model version through the current
// routing snapshot (package gateway/route), applies that version's preprocessing
// (package preprocess), sends a TF Serving Predict pinned to that version through
// [Backends] (host picking, retries: package gateway/hosts; optional batching:
// package gateway/batching), checks that the response names the same version, and
// decodes the outputs with the same version's pipeline.
//
// # Invariants
//
//   - Version pinning (architecture invariant 1): every backend call carries an
//     explicit model_spec.version, the version whose preprocessing was applied; a
//     response naming another version fails the request with INTERNAL and is
//     counted (tfgate.gateway.version_mismatches).
//   - Routable means ready (invariant 2): labels, arms and default routes resolve
//     only to versions whose spec is valid and signature-checked and that a host
//     in the model's pools reports AVAILABLE. ListRoutes says why a version is not
//     routable. Each version's signature is fetched (GetModelMetadata); the
//     comparison is cached by (spec content hash, signature hash), so identical
//     per-customer models are compared once.
//   - Memory does not grow with compiled pipelines: a snapshot holds per routable
//     version only the content hash that was checked; the request path takes
//     that hash's pipeline from the spec store's byte-bounded cache, compiling it
//     on a miss (preprocess.Store.Pipeline), and a version whose spec on disk no
//     longer has that hash fails UNAVAILABLE rather than being served by an
//     unchecked pipeline.
//   - Config is all-or-nothing (invariant 3): a reload (file change or SIGHUP) that
//     fails to parse or validate changes nothing; it is logged, counted and shown by
//     ListRoutes.
//   - One snapshot per request: a request loads the routing snapshot once and uses
//     it from resolution to response, so a concurrent reload never mixes two configs
//     in one request.
//   - Every error becomes a gRPC status in one place, [Code] and [toStatus]
//     (errors.go), with a message that names the model and version and says what to
//     fix.
//
// # Request path and control plane
//
// The request path ([Server], server.go) only reads: each request loads the
// latest immutable snapshot and serves from it. Everything that changes what is
// routable is the control plane, a snapshot builder (builder.go, with the file
// watcher and rebuild loop in watch.go and the signature checks in
// sigcheck.go): it reloads and validates the routing config, follows the spec
// store and the backends' readiness, runs the signature checks, asks readiness
// for the versions it would route, publishes each result as a new snapshot and
// tells the batchers which versions are still served. codec.go carries a
// request's decode error to Predict, and with wire.go passes raw tensors through
// as the bytes that arrived (raw_inputs to the backend, its outputs back as
// raw_outputs), checked from their headers only; errors.go maps every error to
// its gRPC code.
//
// # Placement (--placement)
//
// With [RunConfig.Placement] set, every gateway also runs a
// placement.Controller (placement.go; one gateway leads, by the Consul lock;
// its hosts are the backends' Consul pools, its requirements the routing
// config's default, labels, arms and placement.pins, read from the config now
// serving), writes its demand to KV (demand.go: every placement.demand_interval,
// default 5s, and at once, coalesced, for a cold request; at least 250ms apart,
// so at most 4 writes/s per gateway whatever the number of models), and follows
// the placement and the leader's report (ListPlacement, listplacement.go). A
// request for a version that exists (its version directory is in the spec
// store) but that no host reports AVAILABLE is held (coldstart.go: one hook
// after route resolution) until a host does, woken by each snapshot the builder
// publishes; bounded by placement.cold_start (max_wait, max_queue per model, the
// caller's deadline minus deadline_margin): UNAVAILABLE with
// grpc-retry-pushback-ms when not in time, RESOURCE_EXHAUSTED when the queue is
// full, FAILED_PRECONDITION when placement says no host can hold it. Placed is
// not served (architecture invariant 7): a held request goes on only once a
// host reports the version AVAILABLE, and then only to such a host.
//
// # Experiments
//
// Every Predict that resolved a version hands one [exposure.Record] to
// Options.Exposures (expose.go) once it is answered: [Run] wires the exposure
// log (package gateway/exposure, a bounded writer that drops rather than
// blocks) and the live split monitor (package gateway/split, the SRM p-value
// gauge). A model's shadow (shadow.go) sends a sample of its routed requests to
// another version after the primary answered, through that version's own
// pipeline, on a bounded set of goroutines that sheds instead of queueing;
// package gateway/shadow keeps the comparison ListRoutes shows. Neither can
// change, delay or fail a caller's answer. See docs/experiments.md.
//
// # Concurrency
//
// [Server] methods are safe for concurrent use. Routing snapshots are immutable and
// published through an atomic pointer; rebuilds (config reloads, readiness and spec
// changes, signature checks) are serialized by one mutex and never block requests.
// [Server.Run] owns every goroutine the server starts (the config watcher, the
// rebuild loop, signature checks) and returns after they stop.
//
// # The process
//
// [Run] is the whole gateway process behind one call (cmd/gateway only parses
// flags into a [RunConfig]): the listener and the gRPC server, the hosts manager
// and the preprocessing store, the TLS sources of the listener and the backends
// (re-read on change and on SIGHUP, with the routing config), the admin server
// (/metrics, /healthz, /readyz answering the [Readiness] policy, and the status
// page / with ListRoutes as JSON at /routes: statuspage.go, which only reads the
// snapshot, the hosts manager's view and the counters, among them the arm
// assignments the request path counts since start, armcount.go), and the
// Consul registration. It shuts them down in order: deregister and stop the
// admin server, stop accepting and finish in-flight calls, flush batches, stop
// watchers, close backend connections.
package gateway
