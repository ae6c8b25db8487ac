// Package servingsim is a TensorFlow-Serving-compatible model server: the same gRPC
// services (tensorflow.serving.PredictionService and ModelService, plus
// grpc.health.v1.Health), the same flags, the same codes and message texts, the same
// model base path polling, version policies, labels and config reload. It executes
// models in a small documented format (package model) with a configurable simulated
// compute cost, so that the gateway, batching and load tests measure something real.
// TF Serving itself cannot be installed on these machines; this is its stand-in.
//
// # FORMAT
//
// A model is a base path holding version directories, as for TF Serving:
//
//	<base_path>/<version>/saved_model.pb                placeholder; must exist (or saved_model.pbtxt)
//	<base_path>/<version>/variables/                    empty
//	<base_path>/<version>/assets/...                    vocab.txt, labels.txt, features.txt (modelgen)
//	<base_path>/<version>/assets.extra/servingsim.json  the model: see below
//
// <version> is a child name that parses as a non-negative int64 ("00000123" is 123);
// other names (".tmp-5", "5.partial") are ignored, so a version is written under a
// temporary name and renamed into place.
//
// servingsim.json (model.Spec; unknown fields are errors):
//
//	{
//	  "format_version": 1,
//	  "kind": "text-classifier" | "linear" | "regressor",
//	  "seed": 2,                                  // derives the weights when "weights" is absent
//	  "params": {"vocab_size": 5000, "max_len": 32, "embedding_dim": 16, "classes": 8}
//	          | {"features": 8, "classes": 2}     // linear
//	          | {"features": 8},                  // regressor
//	  "signatures": {"serving_default": {"method_name": "tensorflow/serving/predict",
//	      "inputs":  {"NAME": {"dtype": "DT_INT64", "shape": [-1, 32]}, ...},
//	      "outputs": {"NAME": {"dtype": "DT_FLOAT", "shape": [-1, 8]}, ...}}},
//	  "weights": {"embedding": [...], "kernel": [...], "bias": [...]},  // optional, row-major
//	  "cost": {"per_call_micros": 0, "per_row_micros": 0, "max_concurrent": 0},
//	  "resident_bytes": 0                        // memory once loaded (see Memory below)
//	}
//
// Each declared signature must have exactly the inputs and outputs its kind computes
// (model.Expected); several keys may declare it (all compute the same thing):
//
//   - text-classifier: inputs input_ids and attention_mask, DT_INT64 [-1, L];
//     outputs embedding DT_FLOAT [-1, E] = the mean of the embedding rows of the ids
//     whose mask is non-zero (the zero vector when none is), and scores DT_FLOAT
//     [-1, C] = softmax(embedding · kernel[E×C] + bias[C]). Every id, masked or not,
//     must be in [0, vocab_size), as for a TensorFlow embedding lookup.
//   - linear: input features DT_FLOAT [-1, D]; output scores DT_FLOAT [-1, C] =
//     softmax(features · kernel[D×C] + bias) for C > 1, sigmoid for C = 1.
//   - regressor: input features DT_FLOAT [-1, D]; output values DT_FLOAT [-1, 1] =
//     features · kernel[D] + bias[1].
//
// Arithmetic is in float64, outputs are float32 in float_val. Seed-derived weights
// (model.SeededWeights) come from a documented splitmix64 stream per tensor name
// (model/weights.go): embedding and kernel uniform in [-1, 1), bias in [-0.1, 0.1).
//
// A version without saved_model.pb, or whose servingsim.json is missing, malformed or
// inconsistent, fails to load: it ends in END with the error in GetModelStatus'
// status (NOT_FOUND for a missing SavedModel, INVALID_ARGUMENT for the spec), as a
// broken SavedModel does in TF Serving, and is not retried while it stays on disk.
//
// Simulated compute cost: an execution (one unbatched request, or one batch) holds a
// slot of its version's semaphore (cost.max_concurrent, 0 = unbounded), then a slot
// of the server-wide one (--sim_max_concurrent_executions, the "GPU"), then waits
// per_call + per_row × rows (padding rows included), then computes. The flags
// --sim_cost_per_call, --sim_cost_per_row and --sim_model_max_concurrent override
// every model's values.
//
// # BEHAVIOUR
//
// Reproduced from TF Serving (flags have TF Serving's names):
//   - --model_name/--model_base_path or --model_config_file (text-format
//     ModelServerConfig, re-read every --model_config_file_poll_wait_seconds);
//     base paths polled every --file_system_poll_wait_seconds (default 1; 0 = once).
//   - Version policies latest{N} (default N=1), all, specific; a newly aspired version
//     loads before versions no longer aspired unload (they unload once an aspired
//     version is AVAILABLE, or when none is aspired).
//   - Labels (version_labels) may only name AVAILABLE versions, also at startup
//     (unless --allow_version_labels_for_unavailable_models).
//   - GetModelStatus: labels ignored, versions newest first, unloaded and failed
//     versions kept as END (also after their model is removed from the config).
//   - HandleReloadConfigRequest: only model_config_list; duplicate names, relative
//     base paths, missing or unknown model_platform are INVALID_ARGUMENT; adds,
//     updates and removes models and returns once every added model has an
//     AVAILABLE version (UNKNOWN "N model(s) did not become available" if one fails).
//     Removed models unload in the background: the reload does not wait for them
//     (a load in progress is abandoned, its version ends in END); re-adding a
//     model waits for its earlier removal to finish.
//   - Memory: with --model_memory_limit_bytes (TF Serving's ServerCore option
//     total_model_memory_limit_bytes) each version reserves its servingsim.json
//     resident_bytes when its load starts and frees them when it unloads. A load
//     that does not fit fails as TF Serving's resource tracker fails it: END with
//     RESOURCE_EXHAUSTED "Insufficient resources to load servable {name: N
//     version: V}: ..." in GetModelStatus, and is not retried while it stays
//     aspired (re-adding the model retries it). A new version of a loaded model
//     needs room beside the old one, which unloads only after it. A load spends
//     resident_bytes / --sim_load_bytes_per_second in LOADING; --num_load_threads
//     bounds loads in progress across the server (the rest wait in START).
//   - Predict/GetModelMetadata/GetModelStatus/Classify/Regress/MultiInference codes
//     and messages (errors.go maps every error to a code in one place);
//     response model_spec = resolved name, version (and signature for Predict);
//     output_filter; inputs checked by name, dtype, shape and batch dimension.
//   - Server-side batching (--enable_batching, --batching_parameters_file): per model
//     version, max_batch_size, batch_timeout_micros, max_enqueued_batches,
//     num_batch_threads, allowed_batch_sizes (padding with copies of row 0).
//   - Message sizes: 2 GiB by default, --grpc_channel_arguments
//     grpc.max_receive_message_length / grpc.max_send_message_length.
//   - REST on --rest_api_port (off by default): POST
//     /v1/models/NAME[/versions/N|/labels/L]:predict with {"instances": ...} (row
//     format, answered as {"predictions": ...}) or {"inputs": ...} (columnar,
//     answered as {"outputs": ...}); GET /v1/models/NAME[/versions/N] (status);
//     errors as {"error": "..."} with TF Serving's HTTP statuses; and
//     /monitoring/prometheus/metrics with :tensorflow:serving:request_count
//     {model_name,status} and :tensorflow:serving:request_latency
//     {model_name,API,entrypoint} (µs histogram), counted for Predict.
//
// Not reproduced, or different:
//   - Startup serves after one synchronous poll of every model instead of blocking
//     until every model has a version (it does fail, as TF Serving does, when a
//     model's versions all fail to load).
//   - Failed loads are not retried by default (--max_num_load_retries=0; TF Serving
//     retries 5 times a minute apart).
//   - Versions load only through servingsim.json: no SavedModel, TF ops, warmup
//     files, custom_model_config or model_type. Config files may use only the
//     ModelConfig fields tfgate's proto declares (name, base_path, model_platform,
//     model_version_policy, version_labels); others (logging_config, ...) are errors.
//   - The shape-mismatch message is the simulator's own (TensorFlow's depends on the
//     graph); dtype, batch-dimension and parsing messages are TensorFlow's.
//   - Classify, Regress and MultiInference never run a model (the format has only
//     predict signatures); they answer with TF Serving's errors for that case.
//   - pad_variable_length_inputs is accepted but never needed (signatures have fixed
//     non-batch dimensions); no large-batch splitting.
//   - REST has no :classify, :regress or /metadata and no {"b64": ...} (no string
//     inputs); metrics count Predict only and are served whenever REST is on, with no
//     --monitoring_config_file.
//   - Flags in IgnoredTFServingFlags are accepted and ignored; poll intervals may be
//     fractional seconds.
//   - As in TF Serving, a reload that adds a model with no version on disk waits, and
//     holds later reloads, until it can finish; here the wait also ends at the
//     caller's deadline.
//   - The gRPC server also offers server reflection (for grpcurl); TF Serving does not.
//   - Memory is what servingsim.json declares, not measured: TF Serving estimates
//     a version's RAM from its files on disk before loading and never checks the
//     real use, so a real host can still run out of memory (and the process be
//     killed) where servingsim refuses cleanly; there is no GPU memory, no
//     per-version padding, and unloading frees memory at once (a real allocator
//     may keep it). Without the limit (default) nothing is counted.
//   - --num_load_threads 0 (the default) loads without bound in parallel; TF
//     Serving's 0 loads one at a time in its manager thread.
//
// # CONCURRENCY
//
// A Server is safe for concurrent use. Serve owns every goroutine it starts (one
// poller per model, batch threads per version with batching, the config-file poller)
// and stops them all before it returns. Requests that resolved a version before it
// was unloaded complete normally.
package servingsim
