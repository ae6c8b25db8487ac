// Package journal records every sync attempt as one JSON object per line in a state
// directory (journal.jsonl, rotated to journal-<unixnano>.jsonl), and answers history
// queries over it.
//
// Invariants:
//   - Each Append writes one whole line with a single write(2) on an O_APPEND file, so a
//     crash can at worst cut the last line short; readers skip lines that do not parse.
//   - Size is bounded: the live file rotates past MaxBytes and only the newest MaxFiles
//     rotated files are kept.
//   - One record is bounded too: every text field (model, bucket, key, message id,
//     reason) is cut to MaxFieldBytes with a marker, so a notification quoting a
//     250,000-character key writes a line of a few KB. Query skips and counts any line
//     over MaxLineBytes (or that does not parse) and reads on; no line fails a query.
//
// Concurrency: a Journal is safe for concurrent use; Query may run while another process
// appends.
package journal
