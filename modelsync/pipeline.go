package modelsync

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/tfgate/tfgate/modelsync/extract"
	"github.com/tfgate/tfgate/modelsync/journal"
	"github.com/tfgate/tfgate/modelsync/store"
)

// The fetch-extract-publish pipeline for one version: stream from S3 through the
// hardened extractor into a temporary directory, verify, publish atomically, apply
// retention, and make sure TF Serving serves the model.

func (s *syncer) entry(j job) journal.Entry {
	e := journal.Entry{Time: time.Now(), Model: j.model, Version: j.version, Bucket: j.bucket, Key: j.key,
		Trigger: j.trigger, PhasesMS: map[string]float64{}}
	if j.msg != nil {
		e.MessageID, e.Receives = j.msg.id, j.msg.receives
	}
	return e
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// process fetches, extracts and publishes one version.
func (s *syncer) process(j job) (e journal.Entry) {
	ctx := s.workCtx
	start := time.Now()
	e = s.entry(j)
	e.PhasesMS["queued"] = ms(start.Sub(j.queued))
	ctx, span := s.tracer.Start(trace.ContextWithSpanContext(ctx, j.parent), "modelsync.sync", trace.WithAttributes(
		attribute.String("tfgate.model", j.model), attribute.Int64("tfgate.version", j.version),
		attribute.String("s3.key", j.key), attribute.String("modelsync.trigger", j.trigger)))
	defer func() {
		total := time.Since(start)
		e.PhasesMS["total"] = ms(total)
		s.duration.Record(context.Background(), total.Seconds(), metric.WithAttributes(attribute.String("outcome", e.Outcome)))
		if e.Outcome == journal.Published && !j.eventTime.IsZero() {
			s.freshness.Record(context.Background(), time.Since(j.eventTime).Seconds())
		}
		span.SetAttributes(attribute.String("modelsync.outcome", e.Outcome), attribute.Int64("modelsync.bytes", e.Bytes))
		if e.Reason != "" && e.Outcome != journal.Published && e.Outcome != journal.Duplicate {
			span.SetStatus(otelcodes.Error, e.Reason)
		}
		span.End()
	}()
	phase := func(name string) trace.Span {
		_, sp := s.tracer.Start(ctx, name)
		return sp
	}
	fail := func(outcome string, err error) journal.Entry {
		e.Outcome, e.Reason = outcome, err.Error()
		return e
	}

	ok, src, err := s.store.Lookup(j.model, j.version)
	if err != nil {
		return fail(journal.Failed, fmt.Errorf("look up local version: %w", err))
	}
	if ok {
		return s.existing(ctx, j, src, e, "")
	}

	t := time.Now()
	fx := phase("modelsync.fetch_extract")
	p, err := s.store.Begin(j.model, j.version)
	if err != nil {
		fx.End()
		return fail(journal.Failed, err)
	}
	r := newObjectReader(ctx, s.deps.S3, j.bucket, j.key, s.cfg.FetchAttempts, s.bo, s.cfg.MaxObjectBytes, s.log)
	st, xerr := extract.Extract(ctx, r, p.Dir(), extract.Options{
		Limits: s.cfg.Limits, Root: strconv.FormatInt(j.version, 10), Include: s.cfg.Include,
		Gzip: s.gzip, Sync: !s.cfg.NoFsync,
	})
	sum, ferr := "", error(nil)
	if xerr == nil || (errors.Is(xerr, extract.ErrCorrupt) && r.off > 0 && !isFetchError(xerr) && ctx.Err() == nil) {
		// On success, verify; on a corrupt archive, read the rest to tell a bad object
		// (rejected) from bytes damaged on the way (retried).
		sum, ferr = r.finish()
	}
	r.Close()
	e.Bytes, e.Extracted = r.off, st.Bytes
	s.bytes.Add(context.Background(), r.off)
	e.PhasesMS["fetch_extract"] = ms(time.Since(t))
	fx.SetAttributes(attribute.Int64("modelsync.bytes", r.off), attribute.Int64("modelsync.extracted_bytes", st.Bytes))
	fx.End()
	if err := errors.Join(xerr, ferr); err != nil {
		p.Abort()
		if r.err != nil && ferr == nil {
			// The archive looked broken only because reading the object failed.
			err = r.err
		}
		out := s.classify(ctx, xerr, ferr)
		if out == journal.Abandoned {
			err = fmt.Errorf("shutdown interrupted the download: %w", err)
		}
		if out == journal.Rejected && !errors.Is(err, ErrObjectGone) {
			etag := j.etag
			if etag == "" {
				etag = r.info.ETag
			}
			s.rejected.add(j.key, etag, err.Error())
		}
		return fail(out, err)
	}

	t = time.Now()
	pub := phase("modelsync.publish")
	err = p.Commit(store.Source{Bucket: j.bucket, Key: j.key, SHA256: sum, ETag: r.info.ETag, Size: r.info.Size, PublishedAt: time.Now().UTC()})
	e.PhasesMS["commit"] = ms(time.Since(t))
	pub.End()
	if errors.Is(err, store.ErrExists) {
		_, src, _ := s.store.Lookup(j.model, j.version)
		return s.existing(ctx, j, src, e, sum)
	}
	if err != nil {
		return fail(journal.Failed, fmt.Errorf("publish: %w", err))
	}

	t = time.Now()
	ret := phase("modelsync.retention")
	if removed, err := s.store.Retain(j.model, s.cfg.Retain, s.pinned()); err != nil {
		s.log.Warn("retention failed", "model", j.model, "err", err)
	} else if len(removed) > 0 {
		s.log.Info("retention removed versions", "model", j.model, "versions", removed)
	}
	e.PhasesMS["retention"] = ms(time.Since(t))
	ret.End()

	rl := phase("modelsync.reload")
	err = s.ensureServed(ctx, j.model, e.PhasesMS)
	rl.End()
	if err != nil {
		// Published but not yet in TF Serving's config: retry; the redelivery finds the
		// version published and retries the reload.
		return fail(journal.Failed, err)
	}
	e.Outcome = journal.Published
	return e
}

func (s *syncer) ensureServed(ctx context.Context, model string, phases map[string]float64) error {
	if s.deps.Reloader == nil {
		return nil
	}
	t := time.Now()
	rctx, cancel := context.WithTimeout(ctx, time.Duration(s.cfg.ReloadTimeout))
	defer cancel()
	reloaded, err := s.deps.Reloader.Ensure(rctx, model)
	if reloaded || err != nil {
		phases["reload"] = ms(time.Since(t))
	}
	if err != nil {
		return fmt.Errorf("published, but adding the model to TF Serving failed: %w", err)
	}
	return nil
}

// existing decides what a notification for an already published version means.
// knownSHA is the SHA-256 just computed, when the object was downloaded.
func (s *syncer) existing(ctx context.Context, j job, src *store.Source, e journal.Entry, knownSHA string) journal.Entry {
	same, reason := true, "already published (no source marker: published by something else)"
	if src != nil {
		switch {
		case knownSHA != "" && src.SHA256 != "":
			same = knownSHA == src.SHA256
			reason = "SHA-256 " + knownSHA + " vs published " + src.SHA256
		case j.etag != "" && src.ETag == j.etag:
			same, reason = true, "same ETag "+j.etag
		default:
			info, err := head(ctx, s.deps.S3, j.bucket, j.key)
			switch {
			case errors.Is(err, ErrObjectGone):
				same, reason = true, "already published; the object is gone"
			case err != nil:
				e.Outcome, e.Reason = journal.Failed, "already published; checking the object failed: "+err.Error()
				return e
			case info.SHA256 != "" && src.SHA256 != "":
				same = info.SHA256 == src.SHA256
				reason = "SHA-256 " + info.SHA256 + " vs published " + src.SHA256
			case info.ETag != "" && src.ETag != "":
				same = info.ETag == src.ETag && info.Size == src.Size
				reason = fmt.Sprintf("ETag %s (%d bytes) vs published %s (%d bytes)", info.ETag, info.Size, src.ETag, src.Size)
			default:
				same = info.Size == src.Size
				reason = fmt.Sprintf("size %d vs published %d", info.Size, src.Size)
			}
		}
	}
	if !same {
		e.Outcome = journal.Conflict
		e.Reason = "version already published from a different object; left untouched: " + reason
		return e
	}
	if err := s.ensureServed(ctx, j.model, e.PhasesMS); err != nil {
		e.Outcome, e.Reason = journal.Failed, err.Error()
		return e
	}
	e.Outcome, e.Reason = journal.Duplicate, reason
	return e
}

func isFetchError(err error) bool {
	return errors.Is(err, ErrObjectGone) || errors.Is(err, ErrObjectChanged) || errors.Is(err, ErrTooBig) ||
		errors.Is(err, ErrIntegrity) || errors.Is(err, ErrFetchFailed)
}

// classify maps a fetch/extract failure to an outcome.
func (s *syncer) classify(ctx context.Context, xerr, ferr error) string {
	err := errors.Join(xerr, ferr)
	switch {
	case ctx.Err() != nil:
		return journal.Abandoned
	case errors.Is(err, ErrObjectGone), errors.Is(err, ErrTooBig):
		return journal.Rejected
	case errors.Is(err, ErrIntegrity), errors.Is(err, ErrObjectChanged), errors.Is(err, ErrFetchFailed):
		return journal.Failed
	case errors.Is(xerr, extract.ErrUnsafe), errors.Is(xerr, extract.ErrLimit),
		errors.Is(xerr, extract.ErrEmpty), errors.Is(xerr, extract.ErrCorrupt),
		errors.Is(xerr, extract.ErrRefused):
		return journal.Rejected
	}
	return journal.Failed
}

// pinned returns the retention guard: Config.Pinned plus PinnedFile, read now.
func (s *syncer) pinned() func(string, int64) bool {
	pins, _ := parsePins(s.cfg.Pinned)
	if s.cfg.PinnedFile != "" {
		b, err := os.ReadFile(s.cfg.PinnedFile)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("cannot read pinned file; retention skipped", "file", s.cfg.PinnedFile, "err", err)
			return func(string, int64) bool { return true }
		}
		more, perr := parsePins(splitLines(string(b)))
		if perr != nil {
			s.log.Warn("pinned file has bad lines; retention skipped", "file", s.cfg.PinnedFile, "err", perr)
			return func(string, int64) bool { return true }
		}
		for p := range more {
			pins[p] = true
		}
	}
	return func(m string, v int64) bool { return pins[pin{m, v}] }
}

func splitLines(s string) []string {
	var out []string
	for len(s) > 0 {
		i := 0
		for i < len(s) && s[i] != '\n' {
			i++
		}
		out = append(out, s[:i])
		if i < len(s) {
			i++
		}
		s = s[i:]
	}
	return out
}
