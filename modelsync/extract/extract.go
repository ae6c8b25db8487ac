package extract

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"syscall"

	kgzip "github.com/klauspost/compress/gzip"
)

// Sentinel errors; match with errors.Is.
var (
	// ErrUnsafe: an entry would escape the destination or is a kind of file a model
	// never needs (device, FIFO, link out of the tree, duplicate name).
	ErrUnsafe = errors.New("unsafe archive entry")
	// ErrLimit: the archive exceeds a configured limit (entries, sizes, name length).
	ErrLimit = errors.New("archive exceeds limit")
	// ErrCorrupt: the stream is not a valid gzip-compressed tar archive, or is truncated.
	ErrCorrupt = errors.New("corrupt archive")
	// ErrEmpty: the archive holds no regular file.
	ErrEmpty = errors.New("empty archive")
	// ErrRefused: the filesystem refused an entry's name or link target for a reason
	// that a retry cannot change (ENAMETOOLONG, EILSEQ, EINVAL and their kin). It is a
	// property of the archive, not a transient failure.
	ErrRefused = errors.New("filesystem refuses archive entry")
)

// NameMax is the longest path component (and PathMax the longest link target) that
// Linux filesystems accept; longer ones are refused before anything is written.
const (
	NameMax = 255
	PathMax = 4095
)

// maxLinkHops is how many symlinks one resolution may follow: Linux's MAXSYMLINKS.
const maxLinkHops = 40

// linkSteps bounds the path components all symlink resolutions of one archive may
// walk, so a hostile archive of long link chains costs bounded CPU.
const linkSteps = 1 << 22

// Limits bound what one archive may contain. Zero fields take the defaults.
type Limits struct {
	// MaxEntries is the most entries (files, directories, links). Default 100000.
	MaxEntries int `json:"max_entries" yaml:"max_entries"`
	// MaxEntryBytes is the largest single file. Default 4 GiB.
	MaxEntryBytes int64 `json:"max_entry_bytes" yaml:"max_entry_bytes"`
	// MaxTotalBytes is the sum of all file sizes. Default 16 GiB.
	MaxTotalBytes int64 `json:"max_total_bytes" yaml:"max_total_bytes"`
	// MaxNameBytes is the longest entry name and the longest link target. Default 1024.
	MaxNameBytes int `json:"max_name_bytes" yaml:"max_name_bytes"`
	// MaxTrailingBytes is how much data may follow the tar end marker inside the gzip
	// stream (tar writers pad to a record size). Default 1 MiB.
	MaxTrailingBytes int64 `json:"max_trailing_bytes" yaml:"max_trailing_bytes"`
}

// Default limits.
const (
	DefaultMaxEntries       = 100000
	DefaultMaxEntryBytes    = 4 << 30
	DefaultMaxTotalBytes    = 16 << 30
	DefaultMaxNameBytes     = 1024
	DefaultMaxTrailingBytes = 1 << 20
)

// WithDefaults returns l with zero fields set to their defaults.
func (l Limits) WithDefaults() Limits {
	if l.MaxEntries == 0 {
		l.MaxEntries = DefaultMaxEntries
	}
	if l.MaxEntryBytes == 0 {
		l.MaxEntryBytes = DefaultMaxEntryBytes
	}
	if l.MaxTotalBytes == 0 {
		l.MaxTotalBytes = DefaultMaxTotalBytes
	}
	if l.MaxNameBytes == 0 {
		l.MaxNameBytes = DefaultMaxNameBytes
	}
	if l.MaxTrailingBytes == 0 {
		l.MaxTrailingBytes = DefaultMaxTrailingBytes
	}
	return l
}

// Validate reports every negative limit.
func (l Limits) Validate() error {
	var errs []error
	if l.MaxEntries < 0 {
		errs = append(errs, fmt.Errorf("max_entries %d is negative", l.MaxEntries))
	}
	if l.MaxEntryBytes < 0 {
		errs = append(errs, fmt.Errorf("max_entry_bytes %d is negative", l.MaxEntryBytes))
	}
	if l.MaxTotalBytes < 0 {
		errs = append(errs, fmt.Errorf("max_total_bytes %d is negative", l.MaxTotalBytes))
	}
	if l.MaxNameBytes < 0 {
		errs = append(errs, fmt.Errorf("max_name_bytes %d is negative", l.MaxNameBytes))
	}
	if l.MaxTrailingBytes < 0 {
		errs = append(errs, fmt.Errorf("max_trailing_bytes %d is negative", l.MaxTrailingBytes))
	}
	return errors.Join(errs...)
}

// Decompressor opens a gzip stream.
type Decompressor func(io.Reader) (io.ReadCloser, error)

// StdGzip decompresses with the standard library's compress/gzip.
func StdGzip(r io.Reader) (io.ReadCloser, error) { return gzip.NewReader(r) }

// KlauspostGzip decompresses with github.com/klauspost/compress/gzip.
func KlauspostGzip(r io.Reader) (io.ReadCloser, error) { return kgzip.NewReader(r) }

// Decompressors maps the names settings use ("gzip: klauspost") to implementations.
var Decompressors = map[string]Decompressor{"klauspost": KlauspostGzip, "std": StdGzip}

// DecompressorByName returns the named decompressor, or an error that lists the names.
func DecompressorByName(name string) (Decompressor, error) {
	if d, ok := Decompressors[name]; ok {
		return d, nil
	}
	return nil, fmt.Errorf("gzip %q: want klauspost or std", name)
}

// Options control one extraction.
type Options struct {
	Limits Limits
	// Root is the version directory's name ("17"). An archive whose first entry lies
	// under a directory of that name (or the same number written differently, "0017")
	// is taken as rooted at the version directory and that component is stripped; every
	// other entry must then lie under it too. Empty: entries are taken as they are.
	Root string
	// Include, when not empty, lists the top-level directories to extract (after
	// stripping Root), e.g. "assets", "assets.extra"; everything else is read past.
	Include []string
	// Gzip is the decompressor. Nil: Default.
	Gzip Decompressor
	// Sync fsyncs every file and directory written.
	Sync bool
}

// Default is the decompressor Extract uses when Options.Gzip is nil: the faster of the
// two on this project's benchmark (BenchmarkExtract in this package).
var Default Decompressor = KlauspostGzip

// Stats describe what an extraction did.
type Stats struct {
	Entries  int   // tar entries seen
	Files    int   // regular files written
	Skipped  int   // entries not selected by Include
	Bytes    int64 // bytes of regular files written
	Archived int64 // bytes of regular files in the archive, written or not
}

const copyBuf = 256 << 10

// Extract reads a .tar.gz from r into dst, which must be an existing, empty directory.
func Extract(ctx context.Context, r io.Reader, dst string, opt Options) (Stats, error) {
	lim := opt.Limits.WithDefaults()
	if err := lim.Validate(); err != nil {
		return Stats{}, err
	}
	dec := opt.Gzip
	if dec == nil {
		dec = Default
	}
	root, err := os.OpenRoot(dst)
	if err != nil {
		return Stats{}, fmt.Errorf("open destination: %w", err)
	}
	defer root.Close()

	br := bufio.NewReaderSize(r, 64<<10)
	zr, err := dec(br)
	if err != nil {
		return Stats{}, fmt.Errorf("%w: gzip header: %w", ErrCorrupt, err)
	}
	defer zr.Close()

	x := &extractor{
		ctx: ctx, root: root, opt: opt, lim: lim,
		kinds:  map[string]byte{".": tar.TypeDir},
		dirs:   map[string]bool{".": true},
		linkTo: map[string]string{},
		steps:  linkSteps,
		buf:    make([]byte, copyBuf),
	}
	if len(opt.Include) > 0 {
		x.include = map[string]bool{}
		for _, in := range opt.Include {
			x.include[strings.Trim(path.Clean(in), "/")] = true
		}
	}
	ra := newReadAhead(zr)
	defer ra.stop()
	tr := tar.NewReader(ra)
	for {
		if err := ctx.Err(); err != nil {
			return x.st, err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return x.st, fmt.Errorf("%w: after %d entries: %w", ErrCorrupt, x.st.Entries, err)
		}
		if err := x.entry(hdr, tr); err != nil {
			return x.st, err
		}
	}
	// Read the rest of the gzip stream so its CRC and length are checked: a truncated
	// download can end after the tar end marker but before the gzip trailer.
	n, err := io.Copy(io.Discard, io.LimitReader(ra, lim.MaxTrailingBytes+1))
	if err != nil {
		return x.st, fmt.Errorf("%w: after the tar end marker: %w", ErrCorrupt, err)
	}
	if n > lim.MaxTrailingBytes {
		return x.st, fmt.Errorf("%w: more than %d bytes after the tar end marker", ErrLimit, lim.MaxTrailingBytes)
	}
	if x.files == 0 {
		return x.st, fmt.Errorf("%w: no regular file among %d entries", ErrEmpty, x.st.Entries)
	}
	if err := x.symlinks(); err != nil {
		return x.st, err
	}
	if opt.Sync {
		if err := x.syncDirs(dst); err != nil {
			return x.st, err
		}
	}
	return x.st, nil
}

type extractor struct {
	ctx     context.Context
	root    *os.Root
	opt     Options
	lim     Limits
	include map[string]bool
	// strip: 0 undecided, 1 strip the first component, -1 do not.
	strip int
	// kinds maps each cleaned name seen (after stripping) to its tar type, and each
	// directory an entry implies to TypeDir: the archive's tree as a whole, extracted
	// or skipped.
	kinds map[string]byte
	// linkTo maps each symlink's name to its target.
	linkTo map[string]string
	// links are the symlinks to create, in archive order, once the whole tree is known.
	links []string
	// steps is what is left of the link-resolution budget (linkSteps).
	steps int
	dirs  map[string]bool
	files int
	st    Stats
	buf   []byte
}

func unsafe(name, format string, a ...any) error {
	return fmt.Errorf("%w: %q: %s", ErrUnsafe, name, fmt.Sprintf(format, a...))
}

// clean validates a name from the archive and returns it relative and slash-separated,
// "." for the root itself.
func (x *extractor) clean(name string) (string, error) {
	if len(name) > x.lim.MaxNameBytes {
		return "", fmt.Errorf("%w: entry name of %d bytes, limit %d", ErrLimit, len(name), x.lim.MaxNameBytes)
	}
	if name == "" {
		return "", unsafe(name, "empty name")
	}
	if strings.ContainsRune(name, 0) {
		return "", unsafe(name, "NUL in name")
	}
	if strings.HasPrefix(name, "/") {
		return "", unsafe(name, "absolute path")
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", unsafe(name, "path contains ..")
		}
		if len(c) > NameMax {
			return "", fmt.Errorf("%w: entry name has a %d-byte component, limit %d", ErrLimit, len(c), NameMax)
		}
	}
	return path.Clean(name), nil
}

func sameVersion(a, b string) bool {
	if a == b {
		return true
	}
	x, err1 := strconv.ParseInt(a, 10, 64)
	y, err2 := strconv.ParseInt(b, 10, 64)
	return err1 == nil && err2 == nil && x == y
}

// rebase strips the version directory when the archive is rooted at it.
func (x *extractor) rebase(raw, name string) (string, error) {
	if x.opt.Root == "" {
		return name, nil
	}
	first, rest, _ := strings.Cut(name, "/")
	if x.strip == 0 {
		x.strip = -1
		if name != "." && sameVersion(first, x.opt.Root) {
			x.strip = 1
		}
	}
	if x.strip < 0 {
		return name, nil
	}
	if name == "." {
		return ".", nil
	}
	if !sameVersion(first, x.opt.Root) {
		return "", unsafe(raw, "archive is rooted at %q but this entry is not under it", x.opt.Root)
	}
	if rest == "" {
		return ".", nil
	}
	return rest, nil
}

// badParent reports the first proper ancestor of name that is not a directory (a
// symlink to write through, or a file).
func (x *extractor) badParent(name string) (string, byte) {
	for d := path.Dir(name); d != "."; d = path.Dir(d) {
		if k := x.kinds[d]; k != 0 && k != tar.TypeDir {
			return d, k
		}
	}
	return "", 0
}

func (x *extractor) entry(hdr *tar.Header, tr io.Reader) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	x.st.Entries++
	if x.st.Entries > x.lim.MaxEntries {
		return fmt.Errorf("%w: more than %d entries", ErrLimit, x.lim.MaxEntries)
	}
	name, err := x.clean(hdr.Name)
	if err != nil {
		return err
	}
	if name, err = x.rebase(hdr.Name, name); err != nil {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA, tar.TypeDir, tar.TypeSymlink, tar.TypeLink:
	case tar.TypeChar, tar.TypeBlock:
		return unsafe(hdr.Name, "device file")
	case tar.TypeFifo:
		return unsafe(hdr.Name, "FIFO")
	default:
		return unsafe(hdr.Name, "unsupported entry type %q", string(hdr.Typeflag))
	}
	isReg := hdr.Typeflag == tar.TypeReg || hdr.Typeflag == tar.TypeRegA
	if isReg {
		if hdr.Size > x.lim.MaxEntryBytes {
			return fmt.Errorf("%w: %q is %d bytes, limit %d per file", ErrLimit, hdr.Name, hdr.Size, x.lim.MaxEntryBytes)
		}
		if x.st.Archived+hdr.Size > x.lim.MaxTotalBytes {
			return fmt.Errorf("%w: files total more than %d bytes at %q", ErrLimit, x.lim.MaxTotalBytes, hdr.Name)
		}
		x.st.Archived += hdr.Size
		x.files++
	}
	if name == "." {
		if hdr.Typeflag != tar.TypeDir {
			return unsafe(hdr.Name, "names the destination itself")
		}
		return nil
	}
	if p, k := x.badParent(name); k == tar.TypeSymlink {
		return unsafe(hdr.Name, "would be written through symlink %q", p)
	} else if k != 0 {
		return unsafe(hdr.Name, "parent %q is not a directory", p)
	}
	if prev, dup := x.kinds[name]; dup && !(prev == tar.TypeDir && hdr.Typeflag == tar.TypeDir) {
		return unsafe(hdr.Name, "duplicate entry")
	}
	// Validate links before deciding whether to skip, so a hostile archive is rejected
	// the same way in every mode.
	var target string
	switch hdr.Typeflag {
	case tar.TypeSymlink:
		t := hdr.Linkname
		if t == "" || strings.HasPrefix(t, "/") || strings.ContainsRune(t, 0) {
			return unsafe(hdr.Name, "symlink to %q: absolute or empty target", t)
		}
		if err := checkTarget(t, x.lim.MaxNameBytes); err != nil {
			return fmt.Errorf("%w: symlink %q: %w", ErrLimit, hdr.Name, err)
		}
		// Judge the link by where it resolves through the tree seen so far; what it
		// passes through later entries is judged again once the archive has ended.
		if _, err := x.resolve(name, t); err != nil {
			return unsafe(hdr.Name, "symlink to %q: %v", t, err)
		}
		target = t
	case tar.TypeLink:
		ln, err := x.clean(hdr.Linkname)
		if err != nil {
			return unsafe(hdr.Name, "hard link: %v", err)
		}
		if ln, err = x.rebase(hdr.Linkname, ln); err != nil {
			return err
		}
		if x.kinds[ln] != tar.TypeReg {
			return unsafe(hdr.Name, "hard link to %q, which is not a regular file earlier in the archive", hdr.Linkname)
		}
		target = ln
	}
	x.kinds[name] = hdr.Typeflag
	if hdr.Typeflag == tar.TypeRegA {
		x.kinds[name] = tar.TypeReg
	}
	for d := path.Dir(name); d != "." && x.kinds[d] == 0; d = path.Dir(d) {
		x.kinds[d] = tar.TypeDir
	}
	if hdr.Typeflag == tar.TypeSymlink {
		x.linkTo[name] = target
	}
	if x.include != nil {
		first, _, _ := strings.Cut(name, "/")
		if !x.include[first] {
			x.st.Skipped++
			return nil
		}
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		return x.mkdir(name)
	case tar.TypeSymlink:
		// Created after the last entry, once every link is known to resolve inside
		// the destination: until then no symlink exists on disk.
		x.links = append(x.links, name)
		return nil
	case tar.TypeLink:
		if err := x.mkdir(path.Dir(name)); err != nil {
			return err
		}
		if x.include != nil {
			first, _, _ := strings.Cut(target, "/")
			if !x.include[first] {
				return unsafe(hdr.Name, "hard link to %q, which is not extracted", hdr.Linkname)
			}
		}
		if err := x.root.Link(target, name); err != nil {
			return fsError("hard link", hdr.Name, err)
		}
		return nil
	}
	return x.file(hdr, name, tr)
}

func (x *extractor) mkdir(name string) error {
	if x.dirs[name] {
		return nil
	}
	if err := x.root.MkdirAll(name, 0o755); err != nil {
		return fsError("mkdir", name, err)
	}
	for d := name; d != "." && !x.dirs[d]; d = path.Dir(d) {
		x.dirs[d] = true
		if x.kinds[d] == 0 {
			x.kinds[d] = tar.TypeDir
		}
	}
	return nil
}

// fsError wraps a failed filesystem operation on an entry, as ErrRefused when the
// filesystem refuses the entry itself (a retry would fail the same way).
func fsError(op, name string, err error) error {
	for _, e := range []error{syscall.ENAMETOOLONG, syscall.EILSEQ, syscall.EINVAL, syscall.ELOOP,
		syscall.ENOTDIR, syscall.EISDIR, syscall.EEXIST, syscall.EMLINK} {
		if errors.Is(err, e) {
			return fmt.Errorf("%w: %s %q: %w", ErrRefused, op, name, err)
		}
	}
	return fmt.Errorf("%s %q: %w", op, name, err)
}

// checkTarget bounds a link target: its length and each component's.
func checkTarget(t string, maxBytes int) error {
	if len(t) > maxBytes || len(t) > PathMax {
		return fmt.Errorf("target of %d bytes, limit %d", len(t), min(maxBytes, PathMax))
	}
	for _, c := range strings.Split(t, "/") {
		if len(c) > NameMax {
			return fmt.Errorf("target has a %d-byte component, limit %d", len(c), NameMax)
		}
	}
	return nil
}

var (
	errEscape = errors.New("resolves outside the version directory")
	errLoop   = fmt.Errorf("more than %d levels of symlinks", maxLinkHops)
)

// resolve walks target from the directory of the symlink at link the way the kernel
// does (each ".." leaves the directory actually reached, through every symlink met on
// the way), over the archive's own tree. It fails when any step would leave the
// destination, and reports found=false when it reaches a name the archive does not
// have (yet): the kernel stops there too (ENOENT, or ENOTDIR below a file).
func (x *extractor) resolve(link, target string) (found bool, err error) {
	var cur []string // the directory reached, as components under the destination
	if d := path.Dir(link); d != "." {
		cur = strings.Split(d, "/")
	}
	todo := strings.Split(target, "/")
	hops := 0
	for len(todo) > 0 {
		if x.steps--; x.steps < 0 {
			return false, fmt.Errorf("%w: symlinks take more than %d steps to resolve", ErrLimit, linkSteps)
		}
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(cur) == 0 {
				return false, errEscape
			}
			cur = cur[:len(cur)-1]
			continue
		}
		p := c
		if len(cur) > 0 {
			p = strings.Join(cur, "/") + "/" + c
		}
		switch x.kinds[p] {
		case 0:
			return false, nil
		case tar.TypeSymlink:
			if hops++; hops > maxLinkHops {
				return false, errLoop
			}
			todo = append(strings.Split(x.linkTo[p], "/"), todo...)
		case tar.TypeDir:
			cur = append(cur, c)
		default: // a regular file or a hard link to one
			for _, rest := range todo {
				if rest != "" {
					return false, nil
				}
			}
			cur = append(cur, c)
		}
	}
	return true, nil
}

// symlinks judges every symlink against the complete tree, then creates the ones
// extracted. A link must resolve to an entry of the archive without leaving the
// destination at any step.
func (x *extractor) symlinks() error {
	for name, t := range x.linkTo {
		found, err := x.resolve(name, t)
		if errors.Is(err, ErrLimit) {
			return err
		}
		if err != nil {
			return unsafe(name, "symlink to %q: %v", t, err)
		}
		if !found {
			return unsafe(name, "symlink to %q: the target is not in the archive", t)
		}
	}
	for _, name := range x.links {
		if err := x.mkdir(path.Dir(name)); err != nil {
			return err
		}
		if err := x.root.Symlink(x.linkTo[name], name); err != nil {
			return fsError("symlink", name, err)
		}
	}
	return nil
}

// ctxReader stops a long copy when the context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func (x *extractor) file(hdr *tar.Header, name string, tr io.Reader) error {
	if err := x.mkdir(path.Dir(name)); err != nil {
		return err
	}
	mode := fs.FileMode(0o644)
	if hdr.Mode&0o111 != 0 {
		mode = 0o755
	}
	f, err := x.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fsError("create", hdr.Name, err)
	}
	n, err := io.CopyBuffer(struct{ io.Writer }{f}, ctxReader{x.ctx, tr}, x.buf)
	x.st.Bytes += n
	if err != nil {
		f.Close()
		if cerr := x.ctx.Err(); cerr != nil {
			return cerr
		}
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return fmt.Errorf("write %q: %w", hdr.Name, err)
		}
		return fmt.Errorf("%w: %q after %d of %d bytes: %w", ErrCorrupt, hdr.Name, n, hdr.Size, err)
	}
	if n != hdr.Size {
		f.Close()
		return fmt.Errorf("%w: %q has %d bytes, header says %d", ErrCorrupt, hdr.Name, n, hdr.Size)
	}
	if x.opt.Sync {
		if err := f.Sync(); err != nil {
			f.Close()
			return fmt.Errorf("fsync %q: %w", hdr.Name, err)
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %q: %w", hdr.Name, err)
	}
	x.st.Files++
	return nil
}

// syncDirs fsyncs every directory written, deepest first, the destination last.
func (x *extractor) syncDirs(dst string) error {
	dirs := make([]string, 0, len(x.dirs))
	for d := range x.dirs {
		dirs = append(dirs, d)
	}
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	for _, d := range dirs {
		f, err := x.root.Open(d)
		if err != nil {
			return fmt.Errorf("open %q for fsync: %w", d, err)
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return fmt.Errorf("fsync %q: %w", d, err)
		}
	}
	return nil
}
