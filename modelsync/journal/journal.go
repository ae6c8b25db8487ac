package journal

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Outcomes of a sync attempt.
const (
	Published = "published" // the version was extracted and renamed into place
	Duplicate = "duplicate" // it was already published from the same object
	Conflict  = "conflict"  // it was already published from a different object; left untouched
	Rejected  = "rejected"  // can never succeed (bad message, key, archive, object gone); acknowledged
	Failed    = "failed"    // transient failure; the notification will be redelivered
	Abandoned = "abandoned" // shutdown interrupted it; the notification will be redelivered
	Ignored   = "ignored"   // not a model event (test event, removal, other bucket)
)

// Entry is one sync attempt.
type Entry struct {
	Time      time.Time `json:"time"`
	Model     string    `json:"model,omitempty"`
	Version   int64     `json:"version,omitempty"`
	Bucket    string    `json:"bucket,omitempty"`
	Key       string    `json:"key,omitempty"`
	Trigger   string    `json:"trigger,omitempty"` // "sqs" or "catchup"
	MessageID string    `json:"message_id,omitempty"`
	Receives  int       `json:"receives,omitempty"` // SQS ApproximateReceiveCount
	Outcome   string    `json:"outcome"`
	Reason    string    `json:"reason,omitempty"`
	// Bytes is the compressed object size, Extracted the bytes written.
	Bytes     int64 `json:"bytes,omitempty"`
	Extracted int64 `json:"extracted,omitempty"`
	// PhasesMS holds per-phase durations in milliseconds: queued, fetch_extract
	// (download and extraction stream together), commit, retention, reload, total.
	PhasesMS map[string]float64 `json:"phases_ms,omitempty"`
}

// MaxFieldBytes bounds each text field of a journal record (model, bucket, key,
// message id, reason): outside input quoted in a record is cut there, with a marker, so
// one hostile notification cannot write a line that readers choke on.
const MaxFieldBytes = 1024

// MaxLineBytes is the longest line Query reads; longer (or unparsable) lines are
// skipped and counted, never fatal.
const MaxLineBytes = 1 << 20

// Truncate cuts s to at most n bytes (on a UTF-8 boundary), marking what was cut.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	marker := fmt.Sprintf("...[cut from %d bytes]", len(s))
	cut := n - len(marker)
	if cut < 0 {
		cut = 0
	}
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + marker
}

// Bounded returns e with every text field cut to MaxFieldBytes.
func (e Entry) Bounded() Entry {
	for _, f := range []*string{&e.Model, &e.Bucket, &e.Key, &e.MessageID, &e.Reason, &e.Trigger} {
		*f = Truncate(*f, MaxFieldBytes)
	}
	return e
}

// Total is the total duration.
func (e Entry) Total() time.Duration {
	return time.Duration(e.PhasesMS["total"] * float64(time.Millisecond))
}

// Options bound the journal's size.
type Options struct {
	// MaxBytes rotates the live file past this size. Default 64 MiB.
	MaxBytes int64
	// MaxFiles is how many rotated files are kept. Default 8.
	MaxFiles int
}

const (
	liveName  = "journal.jsonl"
	rotPrefix = "journal-"
)

// Journal appends entries.
type Journal struct {
	dir  string
	opt  Options
	mu   sync.Mutex
	f    *os.File
	size int64
}

// Open opens (creating) the journal in dir.
func Open(dir string, opt Options) (*Journal, error) {
	if opt.MaxBytes <= 0 {
		opt.MaxBytes = 64 << 20
	}
	if opt.MaxFiles <= 0 {
		opt.MaxFiles = 8
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("journal directory: %w", err)
	}
	j := &Journal{dir: dir, opt: opt}
	if err := j.open(); err != nil {
		return nil, err
	}
	return j, nil
}

func (j *Journal) open() error {
	f, err := os.OpenFile(filepath.Join(j.dir, liveName), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open journal: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	j.f, j.size = f, fi.Size()
	return nil
}

// Append writes e, bounded (Entry.Bounded), as one line.
func (j *Journal) Append(e Entry) error {
	b, err := json.Marshal(e.Bounded())
	if err != nil {
		return err
	}
	b = append(b, '\n')
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return errors.New("journal closed")
	}
	if j.size+int64(len(b)) > j.opt.MaxBytes && j.size > 0 {
		if err := j.rotate(); err != nil {
			return err
		}
	}
	n, err := j.f.Write(b)
	j.size += int64(n)
	return err
}

func (j *Journal) rotate() error {
	if err := j.f.Close(); err != nil {
		return err
	}
	j.f = nil
	rot := filepath.Join(j.dir, fmt.Sprintf("%s%d.jsonl", rotPrefix, time.Now().UnixNano()))
	if err := os.Rename(filepath.Join(j.dir, liveName), rot); err != nil {
		return err
	}
	files, _ := rotated(j.dir)
	for len(files) > j.opt.MaxFiles {
		os.Remove(files[0])
		files = files[1:]
	}
	return j.open()
}

// Close closes the file.
func (j *Journal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return nil
	}
	err := j.f.Close()
	j.f = nil
	return err
}

func rotated(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), rotPrefix) && strings.HasSuffix(e.Name(), ".jsonl") {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	sort.Strings(out) // same-width nanosecond stamps sort by time
	return out, nil
}

// Filter selects and orders entries.
type Filter struct {
	Model   string    // exact model name; empty: all
	Outcome []string  // any of these; empty: all
	Since   time.Time // zero: no lower bound
	Until   time.Time // zero: no upper bound
	// Sort: "time" (default), "duration", "bytes", "model".
	Sort string
	// Desc reverses the order.
	Desc bool
	// Limit keeps the first Limit after sorting; 0: all.
	Limit int
}

// Validate reports every problem with the filter.
func (f Filter) Validate() error {
	var errs []error
	switch f.Sort {
	case "", "time", "duration", "bytes", "model":
	default:
		errs = append(errs, fmt.Errorf("sort %q: want time, duration, bytes or model", f.Sort))
	}
	for _, o := range f.Outcome {
		switch o {
		case Published, Duplicate, Conflict, Rejected, Failed, Abandoned, Ignored:
		default:
			errs = append(errs, fmt.Errorf("outcome %q: want one of published, duplicate, conflict, rejected, failed, abandoned, ignored", o))
		}
	}
	if f.Limit < 0 {
		errs = append(errs, fmt.Errorf("limit %d is negative", f.Limit))
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && f.Until.Before(f.Since) {
		errs = append(errs, fmt.Errorf("until %v is before since %v", f.Until, f.Since))
	}
	return errors.Join(errs...)
}

func (f Filter) match(e Entry) bool {
	if f.Model != "" && e.Model != f.Model {
		return false
	}
	if len(f.Outcome) > 0 {
		ok := false
		for _, o := range f.Outcome {
			ok = ok || o == e.Outcome
		}
		if !ok {
			return false
		}
	}
	if !f.Since.IsZero() && e.Time.Before(f.Since) {
		return false
	}
	if !f.Until.IsZero() && e.Time.After(f.Until) {
		return false
	}
	return true
}

// Query reads the journal in dir and returns the matching entries, and how many lines
// could not be parsed.
func Query(dir string, f Filter) ([]Entry, int, error) {
	if err := f.Validate(); err != nil {
		return nil, 0, err
	}
	files, err := rotated(dir)
	if err != nil {
		return nil, 0, fmt.Errorf("read journal directory: %w", err)
	}
	files = append(files, filepath.Join(dir, liveName))
	var out []Entry
	bad := 0
	for _, p := range files {
		fh, err := os.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, bad, err
		}
		n, err := readLines(bufio.NewReaderSize(fh, 64<<10), func(line []byte) {
			var e Entry
			if err := json.Unmarshal(line, &e); err != nil {
				bad++
				return
			}
			if f.match(e) {
				out = append(out, e)
			}
		})
		bad += n
		fh.Close()
		if err != nil {
			return nil, bad, fmt.Errorf("read %s: %w", p, err)
		}
	}
	less := func(a, b Entry) bool { return a.Time.Before(b.Time) }
	switch f.Sort {
	case "duration":
		less = func(a, b Entry) bool { return a.Total() < b.Total() }
	case "bytes":
		less = func(a, b Entry) bool { return a.Bytes < b.Bytes }
	case "model":
		less = func(a, b Entry) bool {
			if a.Model != b.Model {
				return a.Model < b.Model
			}
			return a.Version < b.Version
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if f.Desc {
			return less(out[j], out[i])
		}
		return less(out[i], out[j])
	})
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out, bad, nil
}

// readLines calls fn with each line of r up to MaxLineBytes long (without its newline)
// and skips longer ones, returning how many it skipped.
func readLines(r *bufio.Reader, fn func([]byte)) (skipped int, err error) {
	var line []byte
	long := false
	for {
		chunk, err := r.ReadSlice('\n')
		if !long {
			if len(line)+len(chunk) > MaxLineBytes+1 {
				long, line = true, line[:0]
			} else {
				line = append(line, chunk...)
			}
		}
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case err != nil && err != io.EOF:
			return skipped, err
		}
		if long {
			skipped++
		} else if l := bytes.TrimSuffix(line, []byte("\n")); len(l) > 0 {
			fn(l)
		}
		line, long = line[:0], false
		if err == io.EOF {
			return skipped, nil
		}
	}
}
