package modelsync

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/tfgate/tfgate/modelsync/journal"
)

// catchUpLoop runs catch-up at startup and then every CatchUpInterval (in placement
// mode: writes the catalog from the bucket listing instead).
func (s *syncer) catchUpLoop(ctx context.Context) {
	for {
		if s.place != nil {
			// Placement mode fetches only the assignment; the listing feeds the catalog.
			s.place.catalogLoop(ctx)
			return
		}
		n, err := s.catchUp(ctx)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("catch-up failed; next pass retries", "bucket", s.cfg.Bucket, "err", err)
		} else if err == nil {
			s.log.Info("catch-up listed the bucket", "bucket", s.cfg.Bucket, "missing_versions_queued", n)
		}
		if s.cfg.CatchUpInterval == 0 {
			return
		}
		if sleepCtx(ctx, time.Duration(s.cfg.CatchUpInterval)) != nil {
			return
		}
	}
}

type candidate struct {
	version int64
	key     string
	etag    string
}

// catchUpFallbacks is how many older versions per model catch-up keeps in reserve, to
// publish in turn when a newer one's archive is rejected.
const catchUpFallbacks = 3

// fallbacks are a model's older catch-up candidates, newest first, shared by that
// model's catch-up jobs of one pass.
type fallbacks struct {
	mu    sync.Mutex
	cands []candidate
}

func (f *fallbacks) pop() (candidate, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.cands) == 0 {
		return candidate{}, false
	}
	c := f.cands[0]
	f.cands = f.cands[1:]
	return c, true
}

// fallback returns the job that replaces a rejected catch-up job: the model's next
// older candidate not yet published, if any.
func (s *syncer) fallback(j job, e journal.Entry) (job, bool) {
	if j.fallback == nil || e.Outcome != journal.Rejected {
		return job{}, false
	}
	for {
		c, ok := j.fallback.pop()
		if !ok {
			s.log.Warn("catch-up: no older version of the model to fall back to", "model", j.model, "rejected_version", j.version)
			return job{}, false
		}
		if vs, err := s.store.Versions(j.model); err == nil && len(vs) > 0 && vs[len(vs)-1] >= c.version {
			return job{}, false // the model has this or a newer version already
		}
		note := fmt.Sprintf("catch-up fallback: newer version %d was rejected", j.version)
		s.log.Warn("catch-up: falling back to an older version", "model", j.model, "rejected_version", j.version,
			"version", c.version, "reason", journal.Truncate(e.Reason, journal.MaxFieldBytes))
		return job{model: j.model, version: c.version, bucket: j.bucket, key: c.key, etag: c.etag,
			trigger: "catchup", queued: time.Now(), fallback: j.fallback, note: note}, true
	}
}

// catchUp lists the bucket prefix, and queues the newest CatchUpVersions versions of each
// model that are not published locally. Objects rejected before (same key and ETag) are
// passed over, so the newest version that can be published is chosen; and when a
// queued one is rejected now, the next older takes its place (job.fallback). It
// returns how many it queued.
func (s *syncer) catchUp(ctx context.Context) (int, error) {
	newest := map[string][]candidate{} // per model, ascending, at most CatchUpVersions + catchUpFallbacks
	want := s.cfg.CatchUpVersions
	keep := want + catchUpFallbacks
	passed := 0
	in := &s3.ListObjectsV2Input{Bucket: aws.String(s.cfg.Bucket), Prefix: aws.String(s.layout.Prefix())}
	for {
		out, err := s.deps.S3.ListObjectsV2(ctx, in)
		if err != nil {
			return 0, err
		}
		for _, o := range out.Contents {
			key := aws.ToString(o.Key)
			model, v, err := s.layout.Parse(key)
			if err != nil {
				continue
			}
			etag := strings.Trim(aws.ToString(o.ETag), `"`)
			if _, bad := s.rejected.get(key, etag); bad {
				passed++
				continue
			}
			c := newest[model]
			i := sort.Search(len(c), func(i int) bool { return c[i].version >= v })
			if i < len(c) && c[i].version == v {
				continue // the same version under two layouts: first wins
			}
			if len(c) == keep && i == 0 {
				continue
			}
			c = append(c, candidate{})
			copy(c[i+1:], c[i:])
			c[i] = candidate{version: v, key: key, etag: etag}
			if len(c) > keep {
				c = c[1:]
			}
			newest[model] = c
		}
		if !aws.ToBool(out.IsTruncated) || out.NextContinuationToken == nil {
			break
		}
		in.ContinuationToken = out.NextContinuationToken
	}
	models := make([]string, 0, len(newest))
	for m := range newest {
		models = append(models, m)
	}
	sort.Strings(models)
	if passed > 0 {
		s.log.Info("catch-up passes over objects rejected before (same ETag); older versions stand in", "objects", passed)
	}
	queued := 0
	for _, m := range models {
		have, err := s.store.Versions(m)
		if err != nil {
			return queued, err
		}
		cands := newest[m]
		reserve := &fallbacks{}
		if len(cands) > want {
			for i := len(cands) - want - 1; i >= 0; i-- {
				reserve.cands = append(reserve.cands, cands[i])
			}
			cands = cands[len(cands)-want:]
		}
		for _, c := range cands {
			i := sort.Search(len(have), func(i int) bool { return have[i] >= c.version })
			if i < len(have) && have[i] == c.version {
				continue
			}
			if len(have) > 0 && s.cfg.Retain > 0 && len(have) >= s.cfg.Retain && c.version < have[len(have)-s.cfg.Retain] {
				continue // retention would remove it again
			}
			select {
			case s.slots <- struct{}{}:
			case <-ctx.Done():
				return queued, ctx.Err()
			}
			s.submit(job{model: m, version: c.version, bucket: s.cfg.Bucket, key: c.key, etag: c.etag,
				trigger: "catchup", queued: time.Now(), fallback: reserve})
			queued++
		}
	}
	return queued, nil
}
