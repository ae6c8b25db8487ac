// Package store publishes model versions into a TF Serving model base path
// (<base>/<model>/<version>/) so that a poller never sees a partial version.
//
// Invariants:
//   - A version is written under <base>/<model>/.tmp-<version>-<random>, a name TF
//     Serving ignores because it is not a number, on the same filesystem as its final
//     place; Commit fsyncs it, renames it to <base>/<model>/<version> with
//     RENAME_NOREPLACE (an existing version is never replaced), and fsyncs the parent.
//     A crash at any point leaves either no <version> directory or a whole one.
//   - Each published version has a source marker, <base>/<model>/.<version>.source.json,
//     written and fsynced before the rename, recording what it was built from (SHA-256,
//     ETag, size, key), so a later notification for the same version can be told apart
//     as a duplicate or a conflict without downloading anything.
//   - Removal renames the version to a non-numeric .del- name first, so it disappears
//     from the poller's view in one step, then deletes it.
//   - A model directory exists only while it holds a published version (or something
//     else put it there): Begin creates it when missing and Abort removes it again, so
//     notifications for versions that never publish leave no empty directories.
//   - CleanStale removes leftovers of interrupted work (.tmp-*, .del-*) and must run
//     before any Begin, at startup.
//
// Concurrency: a Store is safe for concurrent use across different models. Callers
// serialise work on one model (modelsync runs one worker per model).
package store
