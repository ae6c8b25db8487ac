package modelsync

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/tfgate/tfgate/modelsync/publish"
)

// S3API is the part of the S3 client the sidecar uses (same signatures as *s3.Client).
type S3API interface {
	GetObject(ctx context.Context, in *s3.GetObjectInput, opts ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	HeadObject(ctx context.Context, in *s3.HeadObjectInput, opts ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
	ListObjectsV2(ctx context.Context, in *s3.ListObjectsV2Input, opts ...func(*s3.Options)) (*s3.ListObjectsV2Output, error)
}

var _ S3API = (*s3.Client)(nil)

// Errors a fetch can end with.
var (
	// ErrObjectGone: the object does not exist (deleted after the notification).
	ErrObjectGone = errors.New("object not found")
	// ErrIntegrity: the bytes read do not match the object's size, SHA-256 or ETag.
	ErrIntegrity = errors.New("integrity check failed")
	// ErrObjectChanged: the object was replaced while it was being read.
	ErrObjectChanged = errors.New("object changed during download")
	// ErrTooBig: the object is larger than MaxObjectBytes.
	ErrTooBig = errors.New("object too large")
	// ErrFetchFailed: reading the object kept failing after every retry and resume.
	ErrFetchFailed = errors.New("S3 read failed")
)

// objectInfo is what the sidecar knows of an object before reading it.
type objectInfo struct {
	Size   int64
	ETag   string // without quotes
	SHA256 string // from metadata, lowercase hex; "" when the publisher set none
}

func httpStatus(err error) int {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

func isNotFound(err error) bool {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "NoSuchKey", "NotFound", "NoSuchBucket":
			return true
		}
	}
	return httpStatus(err) == http.StatusNotFound
}

// backoff is the retry policy: the delay before retry n (1-based).
type backoff func(n int) time.Duration

func expBackoff(first, max time.Duration) backoff {
	return func(n int) time.Duration {
		d := first
		for i := 1; i < n && d < max; i++ {
			d *= 2
		}
		return min(d, max)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// objectReader streams one object, resuming with a Range request after a failed read,
// and hashes what it returns. It never returns bytes of two different object versions:
// resumes carry If-Match on the first response's ETag.
type objectReader struct {
	ctx      context.Context
	api      S3API
	bucket   string
	key      string
	attempts int
	backoff  backoff
	log      *slog.Logger
	maxBytes int64

	info    objectInfo
	err     error // the error that ended reading, if any
	body    io.ReadCloser
	off     int64
	retries int
	sha     hash.Hash
	md5     hash.Hash
}

func newObjectReader(ctx context.Context, api S3API, bucket, key string, attempts int, bo backoff, maxBytes int64, log *slog.Logger) *objectReader {
	return &objectReader{ctx: ctx, api: api, bucket: bucket, key: key, attempts: attempts, backoff: bo,
		maxBytes: maxBytes, log: log, sha: sha256.New(), md5: md5.New()}
}

// open issues the first GET (retrying transient errors) and records the object's identity.
func (r *objectReader) open() error {
	for {
		in := &s3.GetObjectInput{Bucket: aws.String(r.bucket), Key: aws.String(r.key)}
		first := r.off == 0 && r.info.ETag == "" && r.info.Size == 0
		if !first {
			in.Range = aws.String(fmt.Sprintf("bytes=%d-", r.off))
			if r.info.ETag != "" {
				in.IfMatch = aws.String(`"` + r.info.ETag + `"`)
			}
		}
		out, err := r.api.GetObject(r.ctx, in)
		if err == nil {
			if first {
				r.info.ETag = strings.Trim(aws.ToString(out.ETag), `"`)
				r.info.Size = aws.ToInt64(out.ContentLength)
				r.info.SHA256 = strings.ToLower(out.Metadata[publish.MetaSHA256])
				if r.info.SHA256 != "" || !isMD5ETag(r.info.ETag) {
					r.md5 = nil // nothing to check it against
				}
				if r.info.Size > r.maxBytes {
					out.Body.Close()
					return fmt.Errorf("%w: %d bytes, limit %d (max_object_bytes)", ErrTooBig, r.info.Size, r.maxBytes)
				}
			} else if et := strings.Trim(aws.ToString(out.ETag), `"`); et != "" && r.info.ETag != "" && et != r.info.ETag {
				out.Body.Close()
				return fmt.Errorf("%w: ETag %s, was %s", ErrObjectChanged, et, r.info.ETag)
			}
			r.body = out.Body
			return nil
		}
		if r.ctx.Err() != nil {
			return r.ctx.Err()
		}
		if isNotFound(err) {
			return fmt.Errorf("%w: s3://%s/%s", ErrObjectGone, r.bucket, r.key)
		}
		if httpStatus(err) == http.StatusPreconditionFailed {
			return fmt.Errorf("%w: %v", ErrObjectChanged, err)
		}
		if err := r.retry(err); err != nil {
			return err
		}
	}
}

// retry counts a failure and waits, or gives up with the failure.
func (r *objectReader) retry(cause error) error {
	r.retries++
	if r.retries >= r.attempts {
		return fmt.Errorf("%w: s3://%s/%s at byte %d: giving up after %d attempts: %w", ErrFetchFailed, r.bucket, r.key, r.off, r.retries, cause)
	}
	d := r.backoff(r.retries)
	r.log.Warn("S3 read failed; retrying", "bucket", r.bucket, "key", r.key, "offset", r.off, "attempt", r.retries, "delay", d, "err", cause)
	return sleepCtx(r.ctx, d)
}

func (r *objectReader) Read(p []byte) (int, error) {
	n, err := r.read(p)
	if err != nil && err != io.EOF && r.err == nil {
		r.err = err
	}
	return n, err
}

func (r *objectReader) read(p []byte) (int, error) {
	for {
		if r.body == nil {
			if err := r.open(); err != nil {
				return 0, err
			}
		}
		n, err := r.body.Read(p)
		if n > 0 {
			r.sha.Write(p[:n])
			if r.md5 != nil {
				r.md5.Write(p[:n])
			}
			r.off += int64(n)
			if r.off > r.info.Size {
				return n, fmt.Errorf("%w: more than the %d bytes announced", ErrIntegrity, r.info.Size)
			}
		}
		if err == nil {
			return n, nil
		}
		if err == io.EOF && r.off == r.info.Size {
			return n, io.EOF
		}
		r.body.Close()
		r.body = nil
		if r.ctx.Err() != nil {
			return n, r.ctx.Err()
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if rerr := r.retry(err); rerr != nil {
			return n, rerr
		}
		if n > 0 {
			return n, nil
		}
	}
}

// Close releases the body.
func (r *objectReader) Close() error {
	if r.body != nil {
		err := r.body.Close()
		r.body = nil
		return err
	}
	return nil
}

// finish reads whatever the consumer left (up to the object's end), then checks size,
// SHA-256 (when published) and ETag (when it is a single-part MD5). It returns the
// object's SHA-256.
func (r *objectReader) finish() (string, error) {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return "", err
	}
	if r.off != r.info.Size {
		return "", fmt.Errorf("%w: read %d bytes, object has %d", ErrIntegrity, r.off, r.info.Size)
	}
	sum := hex.EncodeToString(r.sha.Sum(nil))
	if r.info.SHA256 != "" && r.info.SHA256 != sum {
		return "", fmt.Errorf("%w: SHA-256 %s, metadata says %s", ErrIntegrity, sum, r.info.SHA256)
	}
	if r.md5 != nil {
		if m := hex.EncodeToString(r.md5.Sum(nil)); m != strings.ToLower(r.info.ETag) {
			return "", fmt.Errorf("%w: MD5 %s, ETag says %s", ErrIntegrity, m, r.info.ETag)
		}
	}
	return sum, nil
}

// isMD5ETag: single-part uploads without SSE-KMS have the content MD5 as ETag;
// multipart ETags end in -<parts>.
func isMD5ETag(etag string) bool {
	if len(etag) != 32 {
		return false
	}
	_, err := hex.DecodeString(etag)
	return err == nil
}

// head fetches an object's identity without its body (for duplicate detection).
func head(ctx context.Context, api S3API, bucket, key string) (objectInfo, error) {
	out, err := api.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		if isNotFound(err) {
			return objectInfo{}, fmt.Errorf("%w: s3://%s/%s", ErrObjectGone, bucket, key)
		}
		return objectInfo{}, err
	}
	return objectInfo{
		Size:   aws.ToInt64(out.ContentLength),
		ETag:   strings.Trim(aws.ToString(out.ETag), `"`),
		SHA256: strings.ToLower(out.Metadata[publish.MetaSHA256]),
	}, nil
}
