// Package reload drives a TF Serving host's model list through
// ModelService.HandleReloadConfigRequest and keeps its --model_config_file
// (text-format ModelServerConfig) in step, so a restart loads the same models.
// Ensure adds a newly published model (serving mode); Set makes the list exactly a
// given set of models and versions (placement mode).
//
// Invariants:
//   - The config file is only rewritten after a successful reload, atomically (temp
//     file, fsync, rename): it never names a model TF Serving refused, and is never torn.
//   - Ensure: models already in the file keep their settings (version policy, labels)
//     unchanged; only missing names are appended, with base_path <base>/<model> and
//     platform "tensorflow".
//   - Set: the config names exactly the given models, each with a specific version
//     policy listing exactly the given versions, so nothing else on disk is loaded.
//     Identical consecutive sets send one RPC; after a failure the next one resends.
//
// Concurrency: a Reloader serialises Ensure and Set calls with a mutex; it is safe
// for concurrent use. Callers bound each call with a deadline: TF Serving's reload
// blocks until added models are AVAILABLE.
package reload
