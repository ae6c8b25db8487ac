// Package extract unpacks a gzip-compressed tar archive of a model version into a
// directory, treating the archive as hostile input.
//
// Invariants:
//   - Nothing is ever written outside the destination directory: every operation goes
//     through an os.Root opened on it, and before that each entry is checked: absolute
//     names, ".." components, hard links to anything but a regular file already
//     extracted, writes through a symlink, device and FIFO files, and duplicate names
//     are all rejected with ErrUnsafe.
//   - No symlink resolves outside the destination, by any path, at any point. A link is
//     judged by where it resolves, not by its text: its target is walked the way the
//     kernel walks it (each ".." leaves the directory actually reached, through every
//     symlink on the way, at most 40 of them) over the archive's whole tree, so a chain
//     such as d/d/up -> ../.. followed by w -> ../d/d/up/../../../etc/passwd is
//     refused. Links are judged once when read (to reject early) and again after the
//     last entry against the complete tree (a link may pass through names that come
//     later), and they are created only then: a rejected archive never leaves a
//     symlink on disk. A link must resolve to an entry of the archive; a dangling one
//     is refused too. SavedModels need no symlinks at all; the rule exists so that
//     archives made with them (a shared vocabulary linked into assets/) still work.
//   - Names and link targets a filesystem would refuse (a component over NameMax bytes,
//     a target over PathMax or MaxNameBytes) are ErrLimit before anything is written,
//     and an entry the filesystem refuses anyway (ENAMETOOLONG, EILSEQ, ...) is
//     ErrRefused: both are properties of the archive, so a caller rejects rather than
//     retries.
//   - Limits bound the work: entry count, per-entry size and total size (checked against
//     the tar header before a byte of the entry is written), name length, and trailing
//     bytes after the archive. Exceeding one is ErrLimit.
//   - A truncated or corrupt stream is ErrCorrupt; the gzip trailer (CRC and length) is
//     always read and checked, even when the tar end marker came first.
//   - On error the destination may hold a partial tree: the caller extracts into a
//     temporary directory and removes it (modelsync's store does).
//   - With Options.Sync every file and directory written is fsynced before Extract
//     returns, so a rename of the destination afterwards publishes durable content.
//
// Concurrency: Extract holds no shared state; concurrent calls on different
// destinations are safe.
package extract
