// Package hosts owns the gateway's TF Serving backends: which hosts each pool has
// (through package discovery), one gRPC connection per address, which model
// versions each host reports AVAILABLE (GetModelStatus polling), and which host a
// call goes to.
//
// # Invariants
//
//   - A call goes only to a host that reported the call's explicit version AVAILABLE
//     at the last poll; a request without an explicit version is refused
//     (ErrNoVersion), never sent with a label.
//   - Pools are tried in the caller's preference order: the first pool with an
//     eligible host (AVAILABLE, not ejected) serves; within it, the less loaded of
//     two random hosts (power of two choices on outstanding calls).
//   - A version AVAILABLE on no host of the pools searched fails fast with
//     ErrVersionUnavailable (NOT_FOUND), naming the model, version and pools.
//   - A call failing with UNAVAILABLE (connection refused or reset, host gone, stream
//     broken) is retried on a different host while the deadline allows
//     (retry.max_attempts, default one retry). Consecutive such failures eject the
//     host for a doubling backoff. If every host with the version is ejected, ejected
//     hosts are still tried rather than failing.
//   - A host that disappears from discovery stops being picked at once; its
//     connection closes after its in-flight calls return.
//   - Hedging (off by default): a call still running after hedging.delay gets a copy
//     on another eligible host; the first success wins and the other is cancelled.
//     Hedges are capped at hedging.budget_percent of calls by a token budget.
//   - After Run returns, calls fail with ErrClosed.
//
// # Readiness polling
//
// TF Serving has no watch API, so readiness is polled with GetModelStatus, one call
// per (host, model), prioritized and budgeted so that 50,000 models stay cheap:
//
//   - Priority set, polled every round (readiness.interval, and at once after a
//     kick): models a host has not answered for yet (a new host, a model new in
//     SetModels, versions dropped after failures); versions asked for with Want
//     that a host does not have AVAILABLE; models a Predict or GetModelMetadata
//     got NOT_FOUND for from a host. Priority polls are not charged to the resync
//     budget. A round takes at most 2048 never-answered models per host (doubling
//     while work is left), publishing each batch, and kicks the next round at once.
//   - Resync: every other (host, model), round robin from a per-host cursor, at
//     most interval x readiness.max_polls_per_second (default 1000/s) per host per
//     interval tick; models polled as priority in the same round are skipped free.
//     A full resync of N models takes N / max_polls_per_second seconds (50 s at
//     50,000); with N <= interval x max_polls_per_second every (host, model) is
//     polled every interval, as before. Kicked rounds poll the priority set only.
//     So a host gets at most max_polls_per_second resync polls per second plus its
//     priority set per round; that set is a set of model names (at most the
//     served models per host) and in steady state holds only versions being
//     rolled out.
//   - Want(model, version) is cheap and non-blocking (its own small lock, never the
//     poller's), idempotent, and kicks a round when the key is new. The wanted set
//     holds at most 4 x (served models) keys (more are ignored and left to the
//     resync); a key is dropped once any host reports it AVAILABLE (it is routable:
//     other hosts pick it up through the resync) or when its model leaves
//     SetModels. Wanting a version already routable does nothing.
//   - A poll failing at the transport level (UNAVAILABLE, DEADLINE_EXCEEDED) stops
//     that host's polls for the rest of the round, so a dead host costs at most
//     readiness.concurrency calls per round. failure_threshold consecutive failed
//     polls of a (host, model) drop that model's versions on the host;
//     failure_threshold consecutive rounds in which every poll of a host failed at
//     the transport level drop all the host's versions at once. Dropped models
//     become priority again, so a recovered host is seen within a round.
//   - Ready closes after the first round, once every pool's discovery has
//     reported, that left no priority work: every (host, model) was polled once
//     (answered or failed), except on hosts that failed at the transport level.
//     At 50,000 models on a local servingsim that is about 5.4 s (4.6 s in one
//     round before; the first 2048 models are routable after a fraction of a
//     second, and the resync budget does not slow start-up). The gateway waits for it
//     at most its ReadyTimeout (10 s) before serving.
//
// # Metrics (through the injected MeterProvider)
//
// tfgate.hosts.hosts{pool,state=up|ejected}, tfgate.hosts.readiness.entries,
// tfgate.hosts.ejections, tfgate.hosts.retries{method},
// tfgate.hosts.readiness.poll_errors, tfgate.hosts.hedges{outcome=sent|won}; and from
// package discovery tfgate.discovery.staleness{service,tag}, tfgate.discovery.errors,
// tfgate.discovery.updates.
//
// # Placement
//
// With placement on, the gateway hands the manager every assignment it reads from
// KV (SetPlacement: Consul service ID -> versions, draining copies included). A
// host named there (matched by the service ID its Consul discovery reports) is
// routed only the versions assigned to it: a version taken off a host leaves the
// routing tables at once, before the host's sidecar unloads it (it drains first,
// modelsync -placement-unload-delay), so no request reaches it after the unload.
// Placement only narrows routing: a version still has to be AVAILABLE. Hosts the
// assignment does not name (static pools, hosts not placed on yet, a host whose
// value was cleared) are routed whatever they report AVAILABLE.
//
// # Concurrency
//
// Predict, GetModelMetadata, Snapshot, Changes, SetModels, SetPlacement and Want are safe for
// concurrent use. The request path reads an immutable snapshot through an atomic pointer and
// takes no lock except a per-host one around the in-flight count. The snapshot is
// rebuilt on every discovery update, readiness change, SetModels and ejection; Changes
// receives a coalesced notification when what a router sees (which healthy hosts have
// which versions) changes. Run owns every goroutine (discoverers, readiness poller)
// and returns only after they have stopped.
package hosts
