// Package batching batches concurrent Predict requests for one (model, version,
// signature) into one backend call, before host picking, the way TF Serving's own
// batching does inside one server -- but across every caller that reaches the gateway.
//
// # What is batched with what
//
// A Batcher serves one (model, version, signature). Requests join the same batch only
// when they have the same input names, dtypes, inner shapes (dimensions after the
// first) and output_filter; with pad_variable_length_inputs the inner sizes may differ
// (the rank may not) and are padded up to the batch's largest with each tensor's first
// element, as TF Serving does. Inputs are concatenated along dimension 0
// (internal/tensor.Concat); with allowed_batch_sizes the batch is padded up to the next
// allowed size with copies of its first row, and the padding rows' outputs are dropped.
// Every caller gets exactly its own rows of every output, in the encoding the backend
// used, bit for bit what the same request sent alone would return (when the model's
// rows are independent, which is what batching a model assumes).
//
// A Group's batcher also belongs to one set of host pools, which Group.Do names
// explicitly with the model's batching config; when either changes, the next
// request gets a new batcher, so a batch always goes to the pools of every member.
//
// Requests that cannot be batched -- a scalar input, zero rows, a dtype tensor does not
// handle, or a request bigger than a batch may be in bytes -- are sent alone, unchanged.
//
// # Invariants
//
//   - A batch never holds more than max_batch_size rows, and its estimated encoded size
//     never exceeds the byte limit (Config.MaxBatchBytes, else Options.MaxMessageBytes):
//     a request that does not fit closes the open batch and starts a new one.
//   - A request with more rows than max_batch_size is ErrInvalidRequest
//     (INVALID_ARGUMENT), as in TF Serving. Malformed tensors (shape and values
//     disagree, inputs with different row counts) are ErrInvalidRequest before they
//     join a batch, so they cannot fail it.
//   - At most max_enqueued_batches batches (open or waiting for a backend slot) are
//     queued, and at most max_in_flight_batches backend calls run at once. A request
//     that would need one more batch fails at once with ErrQueueFull
//     (RESOURCE_EXHAUSTED) naming the model, version and queue size: load is shed,
//     never queued without bound.
//   - Dispatch: a batch is closed when full and sent when a backend slot is free; an
//     open batch becomes due at its batch_timeout and then goes with the next free
//     slot, taking new members until then (as TF Serving's scheduler does), so under
//     load batches grow while the backend is busy instead of queueing up small.
//   - Deadlines: a batch becomes due early
//     when waiting longer would break a member's deadline (deadline minus the expected
//     service time, an EWMA of backend call durations, minus the expected wait for a
//     backend slot). A request whose deadline cannot cover even the queueing goes alone
//     at once; if its deadline is shorter than the expected time of a lone call (an EWMA
//     of lone calls, once one has been measured) it fails at once with ErrDeadline
//     (DEADLINE_EXCEEDED).
//   - A caller that cancels (or whose deadline passes) before dispatch is taken out of
//     its batch; after dispatch the batch goes on and the caller's rows are dropped.
//     One caller never cancels another's work: the backend call's context carries the
//     values of the batch's first member, no cancellation, and the latest member
//     deadline (none if any member has none).
//   - Errors: a batch that fails with INVALID_ARGUMENT (one member's input, or a batch
//     the model rejects) is re-sent member by member, and each gets its own result.
//     Other errors go to every member. The batcher does not retry: the Invoke function
//     owns host failover and the retry policy, and retries the whole batched request as
//     one (it is one PredictRequest); retrying here as well would multiply load during
//     an outage.
//   - Errors returned by Do wrap one of the package's documented sentinels
//     (ErrClosed, ErrInvalidConfig, ErrInvalidRequest, ErrQueueFull, ErrDeadline)
//     with %w, are the caller's context error, or are what Invoke returned. The
//     package builds no gRPC status: the gateway maps errors to codes in one place
//     (gateway.Code; the codes in parentheses above are what it answers). The one
//     status it reads is Invoke's INVALID_ARGUMENT, to re-send a batch member by
//     member.
//
// # Concurrency
//
// Batcher and Group are safe for concurrent use. A Batcher runs no goroutine while
// idle: batch timeouts are timers, and each dispatched batch runs in its own goroutine,
// at most max_in_flight_batches at once. Close dispatches everything queued, waits for
// in-flight batches (cancelling them if its context ends first) and leaves no goroutine
// behind; Do after Close fails with ErrClosed.
//
// Metrics (through the injected MeterProvider; attributes model, version, signature):
// tfgate.batching.batch_size (rows per backend call, padding excluded),
// tfgate.batching.padding_rows, tfgate.batching.queue_wait (seconds),
// tfgate.batching.queue_depth (requests waiting), tfgate.batching.shed (by reason:
// queue_full, deadline), tfgate.batching.alone (requests sent alone, by reason).
package batching
