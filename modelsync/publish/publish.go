// Package publish uploads a model version to S3 as modelsync expects it (a .tar.gz
// of the version directory, with its SHA-256 in the object's metadata) and announces
// it the way S3 would: an S3 event notification sent to an SQS queue (raw, or
// SNS-wrapped) or published to an SNS topic. It is what `modelsync publish` runs, and
// what tests and the demo use to put models where the sidecar finds them.
package publish

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	kgzip "github.com/klauspost/compress/gzip"

	"github.com/tfgate/tfgate/modelsync/event"
	"github.com/tfgate/tfgate/modelsync/store"
)

// PutAPI is what Publish needs of S3.
type PutAPI interface {
	PutObject(ctx context.Context, in *s3.PutObjectInput, opts ...func(*s3.Options)) (*s3.PutObjectOutput, error)
}

// SendAPI is what Publish needs of SQS.
type SendAPI interface {
	SendMessage(ctx context.Context, in *sqs.SendMessageInput, opts ...func(*sqs.Options)) (*sqs.SendMessageOutput, error)
}

// TopicAPI is what Publish needs of SNS.
type TopicAPI interface {
	Publish(ctx context.Context, in *sns.PublishInput, opts ...func(*sns.Options)) (*sns.PublishOutput, error)
}

// PublishClients are the services Publish uses: S3 always, SQS for a QueueURL, SNS
// for a Topic.
type PublishClients struct {
	S3  PutAPI
	SQS SendAPI
	SNS TopicAPI
}

// PublishOptions describe one upload.
type PublishOptions struct {
	Bucket  string
	Prefix  string // key prefix; the key is <prefix>/<model>/<version>.tar.gz
	Model   string
	Version int64
	// Dir is the version directory to archive (its contents become the archive's root).
	Dir string
	// Topic, when set, is the ARN of the SNS topic the S3-shaped notification is
	// published to, as a bucket notification configuration does in production
	// (S3 -> SNS -> one SQS queue per sidecar).
	Topic string
	// QueueURL, when set, receives the S3-shaped notification for the upload directly
	// (raw S3 -> SQS delivery, or with SNS an SNS-shaped envelope, as a subscription
	// without raw delivery would).
	QueueURL string
	// SNS wraps the notification in an SNS envelope, as a topic subscription delivers it.
	SNS bool
	// TopicARN names the topic in the SNS envelope. Default "arn:aws:sns:us-east-1:000000000000:models".
	TopicARN string
	// TempDir holds the archive while it is uploaded. Default os.TempDir().
	TempDir string
}

// Published describes an upload.
type Published struct {
	Key    string
	Size   int64
	SHA256 string
	ETag   string
}

// MetaSHA256 is the user-metadata key (x-amz-meta-sha256) holding the archive's
// SHA-256, hex; the sidecar verifies downloads against it.
const MetaSHA256 = "sha256"

// ObjectKey is the default layout's key for a version.
func ObjectKey(prefix, model string, version int64) string {
	k := model + "/" + strconv.FormatInt(version, 10) + ".tar.gz"
	if p := strings.Trim(prefix, "/"); p != "" {
		k = p + "/" + k
	}
	return k
}

// Publish archives opt.Dir as .tar.gz, uploads it with its SHA-256 in metadata and, with a
// QueueURL, sends the notification S3 would have sent.
func Publish(ctx context.Context, put PutAPI, send SendAPI, opt PublishOptions) (Published, error) {
	return PublishWith(ctx, PublishClients{S3: put, SQS: send}, opt)
}

// PublishWith is Publish with every client: with a Topic it publishes the notification
// to that SNS topic (SNS wraps it and fans it out to the subscribed queues), with a
// QueueURL it sends it to that queue; both may be set.
func PublishWith(ctx context.Context, c PublishClients, opt PublishOptions) (Published, error) {
	put, send := c.S3, c.SQS
	var errs []error
	if opt.Bucket == "" {
		errs = append(errs, errors.New("bucket is required"))
	}
	if err := store.CheckModel(opt.Model); err != nil {
		errs = append(errs, err)
	}
	if opt.Version < 0 {
		errs = append(errs, fmt.Errorf("version %d is negative", opt.Version))
	}
	if fi, err := os.Stat(opt.Dir); err != nil || !fi.IsDir() {
		errs = append(errs, fmt.Errorf("directory %q: not a readable directory (%v)", opt.Dir, err))
	}
	if opt.QueueURL != "" && send == nil {
		errs = append(errs, errors.New("a queue URL needs an SQS client"))
	}
	if opt.Topic != "" && c.SNS == nil {
		errs = append(errs, errors.New("a topic needs an SNS client"))
	}
	if put == nil {
		errs = append(errs, errors.New("an S3 client is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return Published{}, err
	}
	tmp, err := os.CreateTemp(opt.TempDir, "modelsync-publish-*.tar.gz")
	if err != nil {
		return Published{}, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h := sha256.New()
	if err := WriteTarGz(io.MultiWriter(tmp, h), opt.Dir); err != nil {
		return Published{}, err
	}
	size, err := tmp.Seek(0, io.SeekCurrent)
	if err != nil {
		return Published{}, err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return Published{}, err
	}
	pub := Published{Key: ObjectKey(opt.Prefix, opt.Model, opt.Version), Size: size, SHA256: hex.EncodeToString(h.Sum(nil))}
	out, err := put.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(opt.Bucket), Key: aws.String(pub.Key), Body: tmp, ContentLength: aws.Int64(size),
		ContentType: aws.String("application/gzip"), Metadata: map[string]string{MetaSHA256: pub.SHA256},
	})
	if err != nil {
		return pub, fmt.Errorf("upload s3://%s/%s: %w", opt.Bucket, pub.Key, err)
	}
	pub.ETag = strings.Trim(aws.ToString(out.ETag), `"`)
	now := time.Now()
	if opt.Topic != "" {
		// What S3 publishes to a topic: the event JSON as the message, subject
		// "Amazon S3 Notification". SNS adds the envelope on delivery.
		body := event.NewCreated(opt.Bucket, pub.Key, size, pub.ETag, now)
		if _, err := c.SNS.Publish(ctx, &sns.PublishInput{
			TopicArn: aws.String(opt.Topic), Message: aws.String(string(body)), Subject: aws.String("Amazon S3 Notification"),
		}); err != nil {
			return pub, fmt.Errorf("uploaded, but the notification to topic %s failed: %w", opt.Topic, err)
		}
	}
	if opt.QueueURL != "" {
		body := event.NewCreated(opt.Bucket, pub.Key, size, pub.ETag, now)
		if opt.SNS {
			arn := opt.TopicARN
			if arn == "" {
				arn = "arn:aws:sns:us-east-1:000000000000:models"
			}
			body = event.WrapSNS(body, arn, now)
		}
		if _, err := send.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(opt.QueueURL), MessageBody: aws.String(string(body))}); err != nil {
			return pub, fmt.Errorf("uploaded, but the notification to %s failed: %w", opt.QueueURL, err)
		}
	}
	return pub, nil
}

// WriteTarGz writes dir's contents (regular files, directories, relative symlinks) as a
// gzip-compressed tar rooted at the contents, in lexical order with fixed modes and
// times so the same tree always gives the same bytes.
func WriteTarGz(w io.Writer, dir string) error {
	zw := kgzip.NewWriter(w)
	tw := tar.NewWriter(zw)
	mt := time.Unix(0, 0)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		h := &tar.Header{Name: rel, ModTime: mt, Format: tar.FormatPAX}
		switch {
		case fi.Mode().IsRegular():
			h.Typeflag, h.Size, h.Mode = tar.TypeReg, fi.Size(), 0o644
			if fi.Mode()&0o111 != 0 {
				h.Mode = 0o755
			}
		case fi.IsDir():
			h.Typeflag, h.Name, h.Mode = tar.TypeDir, rel+"/", 0o755
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, target, 0o777
		default:
			return fmt.Errorf("%s: only regular files, directories and symlinks can be published", p)
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if h.Typeflag == tar.TypeReg {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}
