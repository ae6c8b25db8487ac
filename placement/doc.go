// Package placement decides which serving hosts hold which model versions, and
// keeps that decision in Consul KV, so that a fleet of TF Serving hosts serves tens
// of thousands of per-customer models without every host loading every model.
//
// # Pieces
//
//   - Decide (policy.go) is the policy: a pure, deterministic function of an Input
//     snapshot (hosts and their capacity per pool, the catalog of versions and
//     sizes, what hosts report resident, demand, routing requirements and pins,
//     load-failure backoffs, the previous assignment, the time) to a Decision: the
//     Assignment (per host, the versions it should hold) and, per version, why.
//   - EncodeHost / DecodeHost (codec.go) are the KV wire format of one host's
//     assignment: sharded, gzip-compressed, with a manifest that names every shard's
//     generation and checksum.
//   - Store (store.go) reads and writes that state in Consul KV: assignments with
//     check-and-set and a leader-session guard, watches with blocking queries,
//     host status, gateway demand and the catalog.
//   - Controller (controller.go) is the one decision-maker. Run campaigns for the
//     session lock <prefix>/placement-leader (a session with a TTL, renewed while
//     the process lives, api.Lock on it); while it holds the lock it reads the
//     previous assignment from KV once, then on every interval, demand report or
//     Trigger reads hosts, catalog, status and demand, runs Decide from what it
//     last wrote and writes the changes. The lost-leadership channel cancels the
//     leading context at once, aborting a write in flight; a write that reaches
//     Consul anyway fails its check-session. Shutdown releases the
//     lock so a successor leads immediately; a killed leader is replaced when its
//     session expires (TTL 10s; Consul allows up to 2x, then the lock-delay and
//     consul/api's 5s retry: about 25s measured). A decision is refused (and the
//     placement kept) when the host list or the catalog comes back empty while
//     versions are placed: nothing is unloaded for lack of an answer.
//
// # Policy
//
//  1. Candidates: per pool, weighted rendezvous hashing (rendezvous.go) ranks the
//     pool's hosts for each version, the same ranking in every process. Adding or
//     removing one of N hosts changes about 1/N of first candidates.
//  2. Priority: pinned versions, then versions the routing config needs (default,
//     labels, experiment arms), then the rest by request rate (the gateways'
//     reports: a count decayed with a 60 s time constant), then by last use.
//  3. Keep: previous copies stay where they are (no reshuffle: deciding again from
//     a decision's own output changes nothing) unless their host left the pool,
//     lost its capacity, or failed to load the version.
//  4. Place: missing copies go to the best-ranked candidate with room; a full
//     candidate overflows to the next. When none has room, copies are evicted
//     on the candidate where that loses the least request rate: the copies with
//     the fewest requests per byte first (least recently used among equals),
//     only unpinned, unrequired copies placed at least the pool's min_residency
//     ago, and, for a version placed on demand, only when their summed rate is
//     below its own (with no rates at all: only copies used less recently than
//     it). So a model asked for once waits (the cold-start UNAVAILABLE, with
//     pushback) rather than evict a model asked for every second; its retries
//     raise its rate until it is placed. Pure LRU, as ModelMesh uses, thrashes
//     under Zipf traffic: in the demo's fleet phase it evicted 33 copies/s at
//     100 req/s and served 60-68% warm; this rule, 0.7/s and 86%.
//  5. Rebalance: a copy not on one of its best-ranked hosts (a host joined, room
//     opened at home) moves there, make-before-break (the old copy stays Draining
//     until the new host reports the version loaded), at most Config.MaxMoves per
//     decision.
//  6. Copies follow demand: ceil(rate / copy_rate), clamped to
//     [min_copies, max_copies, hosts in pool], changing only outside a hysteresis
//     band so that demand at a boundary does not flap.
//
// # Invariants (each has a test)
//
//   - No host is assigned more bytes than its capacity.
//   - The decision depends only on the snapshot, not on input order or map order.
//   - A copy younger than its pool's min_residency is never evicted (churn guard).
//   - Pinned and required versions are never evicted for anything else; when they
//     do not fit, the decision says so (State Pending/Partial and a
//     RequiredNotResident Problem), it does not drop them silently.
//   - A host in load-failure backoff for a version is not assigned it.
//   - A frozen host (ControllerConfig.RequireStatus: its sidecar stopped
//     reporting) keeps its versions and is assigned no new ones; its copies are
//     not counted, so each of its versions gets its copies on live hosts.
//   - Placed is not served: the gateway routes by what hosts report AVAILABLE,
//     never by the assignment (architecture invariant 7).
//
// # Consul KV layout
//
// Under a prefix (default "tfgate"):
//
//	<prefix>/placement-leader                        the controller's session lock (api.Lock)
//	<prefix>/placement/<pool>/<host>/manifest        JSON Manifest: generation, per-shard {gen, sum, entries, bytes}
//	<prefix>/placement/<pool>/<host>/shard/<i>.<gen> gzip text of the host's entries whose model hashes to shard i
//	<prefix>/catalog/manifest, shard/<i>.<gen>       the model catalog, same format (Bytes = object bytes)
//	<prefix>/placement-report                        gzip JSON Report: the leader's last decision (stats, problems, versions short of copies)
//	<prefix>/status/<host>                           gzip JSON HostStatus, written by the host's sidecar
//	<prefix>/demand/<gateway-id>                     gzip JSON DemandReport, written by each gateway
//
// Writes of placement/ are transactions that begin with a check-session on
// <prefix>/placement-leader (only the session holding the lock may write) and
// check-and-set the manifest on the ModifyIndex the writer read, so a deposed
// leader that has not noticed yet can overwrite neither its successor nor a value
// it did not read. New shard generations are written with CAS index 0 (must not
// exist). Status and demand keys have one writer each and are plain puts; readers
// ignore reports older than a TTL. A host that leaves the host list
// (deregistered, failing its health check) or has no capacity keeps its value
// until a decision has placed its versions elsewhere; then the leader deletes
// it (one transaction: check-session, check-index on the manifest, delete-tree),
// so readers stop naming it and a host that comes back is assigned afresh
// rather than reloading its stale value. Deleting unloads nothing: a sidecar
// still watching keeps what it has (no value is not an empty one). A host whose
// sidecar stopped reporting (status older than the TTL, with RequireStatus) has
// not left: its value stays, and it is frozen.
//
// A reader lists <prefix>/placement/<pool>/<host>/ (one consistent read at one
// index), takes the manifest, and accepts the assignment only if every shard it
// names is present with a matching checksum; otherwise an update is in flight and
// the reader keeps its last good assignment. Writers write the changed shards
// under a new generation, then the manifest, so readers never see a torn value.
// A host's manifest and shards fit one Consul transaction (at most 62 shards +
// manifest + a session check <= 64 ops); 50,000 entries on one host compress to
// about 700 KB over 16 shards of ~45 KB, under the 512 KiB value limit.
//
// # Metrics
//
// The Controller's, from its MeterProvider (OTel names; Prometheus adds _total,
// _bytes, _seconds): tfgate.placement.decisions{result=written|unchanged|failed},
// tfgate.placement.kv.written (bytes), tfgate.placement.copies.changed
// {change=added|removed|moved}, tfgate.placement.evictions,
// tfgate.placement.decision.duration (s), and the gauges tfgate.placement.leader
// (0/1) and tfgate.placement.pending{kind=all|required} (leader only).
//
// # Concurrency
//
// Decide, EncodeHost and DecodeHost are pure and safe for concurrent use; a
// Decision is immutable once returned and may be shared. Store is safe for
// concurrent use; WatchHost owns its loop until ctx is done, and while Consul is
// unreachable or a value is torn it delivers nothing (receivers keep the last
// good value), backing off between BackoffMin and BackoffMax; a *Stored is
// owned by one writer.
package placement
