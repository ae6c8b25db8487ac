package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Sentinel errors; match them with errors.Is.
var (
	// ErrMalformed: the body is not an S3 event notification, SNS-wrapped or raw.
	ErrMalformed = errors.New("malformed notification")
	// ErrTooLarge: the body is longer than the caller's limit.
	ErrTooLarge = errors.New("notification too large")
	// ErrUnknownEvent: a record names an event this package does not know.
	ErrUnknownEvent = errors.New("unknown event name")
	// ErrBadRecord: a record lacks a field every S3 record carries (bucket, key).
	ErrBadRecord = errors.New("bad record")
)

// DefaultMaxBodyBytes is SQS's own message size limit (256 KiB).
const DefaultMaxBodyBytes = 256 << 10

// DefaultMaxRecords is how many records of one message are read by default. S3 sends
// one record per notification; a message with thousands is hostile or broken.
const DefaultMaxRecords = 100

// Kind classifies a record's event.
type Kind int

const (
	// Created: s3:ObjectCreated:* (Put, Post, Copy, CompleteMultipartUpload).
	Created Kind = iota + 1
	// Removed: s3:ObjectRemoved:*; the sidecar acknowledges and ignores these.
	Removed
	// Other: a known S3 event family that does not concern models (restore, replication,
	// lifecycle, tagging, ACL); acknowledged and ignored.
	Other
)

func (k Kind) String() string {
	switch k {
	case Created:
		return "created"
	case Removed:
		return "removed"
	case Other:
		return "other"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Record is one S3 object event.
type Record struct {
	Kind      Kind
	EventName string // as sent, e.g. "ObjectCreated:Put"
	Source    string // "aws:s3", "minio:s3", ...
	Time      time.Time
	Bucket    string
	Key       string // URL-decoded
	Size      int64  // -1 when the record does not say
	ETag      string // without quotes
	VersionID string
	Sequencer string
}

// RecordError reports one record that could not be used, by its position in the message.
type RecordError struct {
	Index int
	Err   error
}

func (e RecordError) Error() string { return fmt.Sprintf("record %d: %v", e.Index, e.Err) }
func (e RecordError) Unwrap() error { return e.Err }

// Message is a parsed notification.
type Message struct {
	// Test is true for an s3:TestEvent; it carries no records.
	Test bool
	// SNS is true when the notification arrived in an SNS envelope.
	SNS bool
	// Records are the usable records, in message order.
	Records []Record
	// Rejected lists the records that could not be used and why.
	Rejected []RecordError
	// Unread counts the records past the limit on records per message, which were
	// not decoded.
	Unread int
}

type snsEnvelope struct {
	Type    string  `json:"Type"`
	Message *string `json:"Message"`
}

type rawRecord struct {
	EventName   string `json:"eventName"`
	EventSource string `json:"eventSource"`
	EventTime   string `json:"eventTime"`
	S3          *struct {
		Bucket *struct {
			Name string `json:"name"`
		} `json:"bucket"`
		Object *struct {
			Key       string       `json:"key"`
			Size      *json.Number `json:"size"`
			ETag      string       `json:"eTag"`
			VersionID string       `json:"versionId"`
			Sequencer string       `json:"sequencer"`
		} `json:"object"`
	} `json:"s3"`
}

// Parse decodes one SQS message body with DefaultMaxRecords. maxBytes <= 0 means
// DefaultMaxBodyBytes.
func Parse(body []byte, maxBytes int) (Message, error) {
	return ParseLimited(body, maxBytes, DefaultMaxRecords)
}

// ParseLimited is Parse reading at most maxRecords records (<= 0: DefaultMaxRecords);
// Message.Unread counts the rest. Each record is decoded on its own, so one that is
// malformed (nested past the JSON decoder's depth limit, say) is rejected alone and
// the message's other records are still used.
func ParseLimited(body []byte, maxBytes, maxRecords int) (Message, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBodyBytes
	}
	if maxRecords <= 0 {
		maxRecords = DefaultMaxRecords
	}
	if len(body) > maxBytes {
		return Message{}, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(body), maxBytes)
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return Message{}, fmt.Errorf("%w: body is not a JSON object", ErrMalformed)
	}
	top, err := members(body)
	if err != nil {
		return Message{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	var env snsEnvelope
	if err := decodeFields(top, map[string]any{"Type": &env.Type, "Message": &env.Message}); err != nil {
		return Message{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	sns := false
	if env.Type != "" {
		if env.Type != "Notification" {
			return Message{}, fmt.Errorf("%w: SNS message of type %q, want Notification", ErrMalformed, env.Type)
		}
		if env.Message == nil {
			return Message{}, fmt.Errorf("%w: SNS Notification without Message", ErrMalformed)
		}
		sns = true
		body = bytes.TrimSpace([]byte(*env.Message))
		if len(body) == 0 || body[0] != '{' {
			return Message{}, fmt.Errorf("%w: SNS Message is not a JSON object", ErrMalformed)
		}
	}
	if sns {
		if top, err = members(body); err != nil {
			return Message{}, fmt.Errorf("%w: SNS Message: %v", ErrMalformed, err)
		}
	}
	m, err := parseS3(top, maxRecords)
	m.SNS = sns
	return m, err
}

func parseS3(top map[string][]byte, maxRecords int) (Message, error) {
	var event string
	if err := decodeFields(top, map[string]any{"Event": &event}); err != nil {
		return Message{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	rawRecords, ok := top["Records"]
	if !ok || string(rawRecords) == "null" {
		if event == "s3:TestEvent" {
			return Message{Test: true}, nil
		}
		if event != "" {
			return Message{}, fmt.Errorf("%w: %q without Records", ErrUnknownEvent, event)
		}
		return Message{}, fmt.Errorf("%w: no Records and no Event field", ErrMalformed)
	}
	records, unread, err := elements(rawRecords, maxRecords)
	if err != nil {
		return Message{}, fmt.Errorf("%w: Records: %v", ErrMalformed, err)
	}
	if len(records) == 0 {
		return Message{}, fmt.Errorf("%w: empty Records", ErrMalformed)
	}
	m := Message{Unread: unread}
	for i, raw := range records {
		r, err := parseRecord(raw)
		if err != nil {
			m.Rejected = append(m.Rejected, RecordError{Index: i, Err: err})
			continue
		}
		m.Records = append(m.Records, r)
	}
	return m, nil
}

func parseRecord(raw json.RawMessage) (Record, error) {
	var rr rawRecord
	if err := json.Unmarshal(raw, &rr); err != nil {
		return Record{}, fmt.Errorf("%w: %v", ErrBadRecord, err)
	}
	kind, err := classify(rr.EventName)
	if err != nil {
		return Record{}, err
	}
	if rr.S3 == nil || rr.S3.Bucket == nil || rr.S3.Object == nil {
		return Record{}, fmt.Errorf("%w: missing s3.bucket or s3.object", ErrBadRecord)
	}
	if rr.S3.Bucket.Name == "" {
		return Record{}, fmt.Errorf("%w: empty s3.bucket.name", ErrBadRecord)
	}
	if rr.S3.Object.Key == "" {
		return Record{}, fmt.Errorf("%w: empty s3.object.key", ErrBadRecord)
	}
	key, err := url.QueryUnescape(rr.S3.Object.Key)
	if err != nil {
		return Record{}, fmt.Errorf("%w: object key %q is not URL-encoded: %v", ErrBadRecord, rr.S3.Object.Key, err)
	}
	r := Record{
		Kind:      kind,
		EventName: rr.EventName,
		Source:    rr.EventSource,
		Bucket:    rr.S3.Bucket.Name,
		Key:       key,
		Size:      -1,
		ETag:      strings.Trim(rr.S3.Object.ETag, `"`),
		VersionID: rr.S3.Object.VersionID,
		Sequencer: rr.S3.Object.Sequencer,
	}
	if rr.S3.Object.Size != nil {
		sz, err := rr.S3.Object.Size.Int64()
		if err != nil || sz < 0 {
			return Record{}, fmt.Errorf("%w: object size %q is not a non-negative integer", ErrBadRecord, rr.S3.Object.Size.String())
		}
		r.Size = sz
	}
	if rr.EventTime != "" {
		if t, err := time.Parse(time.RFC3339Nano, rr.EventTime); err == nil {
			r.Time = t
		}
	}
	return r, nil
}

// classify maps an event name ("ObjectCreated:Put", also with an "s3:" prefix as in
// bucket notification configs) to its Kind.
func classify(name string) (Kind, error) {
	n := strings.TrimPrefix(name, "s3:")
	family, _, _ := strings.Cut(n, ":")
	switch family {
	case "ObjectCreated":
		return Created, nil
	case "ObjectRemoved":
		return Removed, nil
	case "ObjectRestore", "Replication", "LifecycleExpiration", "LifecycleTransition",
		"IntelligentTiering", "ObjectTagging", "ObjectAcl", "ReducedRedundancyLostObject":
		return Other, nil
	}
	if name == "" {
		return 0, fmt.Errorf("%w: record has no eventName", ErrUnknownEvent)
	}
	return 0, fmt.Errorf("%w: %q", ErrUnknownEvent, name)
}
