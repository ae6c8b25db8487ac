package event

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const rawPut = `{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-east-1",
"eventTime":"2026-11-24T01:02:03.456Z","eventName":"ObjectCreated:Put",
"s3":{"s3SchemaVersion":"1.0","bucket":{"name":"models","arn":"arn:aws:s3:::models"},
"object":{"key":"prod/my+model%2Fx/17.tar.gz","size":1234,"eTag":"\"0123abcd\"","sequencer":"0055AED6DCD90281E5"}}}]}`

const testEvent = `{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-11-24T01:02:03.456Z","Bucket":"models","RequestId":"X","HostId":"Y"}`

func sns(inner string) string {
	return string(WrapSNS([]byte(inner), "arn:aws:sns:us-east-1:1:models", time.Unix(0, 0)))
}

func TestParse(t *testing.T) {
	multi := `{"Records":[
{"eventName":"ObjectCreated:CompleteMultipartUpload","s3":{"bucket":{"name":"b"},"object":{"key":"m/1.tar.gz","size":5}}},
{"eventName":"ObjectRemoved:Delete","s3":{"bucket":{"name":"b"},"object":{"key":"m/0.tar.gz"}}},
{"eventName":"Bogus:Thing","s3":{"bucket":{"name":"b"},"object":{"key":"m/2.tar.gz"}}},
{"eventName":"ObjectCreated:Copy","s3":{"bucket":{"name":"b"}}},
{"eventName":"s3:ObjectCreated:Post","s3":{"bucket":{"name":"b"},"object":{"key":"a%20b/3.tar.gz","size":-4}}},
{"eventName":"s3:ObjectCreated:Post","s3":{"bucket":{"name":"b"},"object":{"key":"a%zz/3.tar.gz"}}}
]}`
	tests := []struct {
		name         string
		body         string
		max          int
		wantErr      error
		wantTest     bool
		wantSNS      bool
		wantKeys     []string
		wantRejected []error
	}{
		{name: "raw put", body: rawPut, wantKeys: []string{"prod/my model/x/17.tar.gz"}},
		{name: "sns put", body: sns(rawPut), wantSNS: true, wantKeys: []string{"prod/my model/x/17.tar.gz"}},
		{name: "test event", body: testEvent, wantTest: true},
		{name: "sns test event", body: sns(testEvent), wantTest: true, wantSNS: true},
		{name: "multiple records, some bad", body: multi, wantKeys: []string{"m/1.tar.gz", "m/0.tar.gz"},
			wantRejected: []error{ErrUnknownEvent, ErrBadRecord, ErrBadRecord, ErrBadRecord}},
		{name: "not json", body: `hello`, wantErr: ErrMalformed},
		{name: "json array", body: `[1,2]`, wantErr: ErrMalformed},
		{name: "truncated json", body: `{"Records":[`, wantErr: ErrMalformed},
		{name: "empty", body: ``, wantErr: ErrMalformed},
		{name: "no records no event", body: `{"foo":1}`, wantErr: ErrMalformed},
		{name: "empty records", body: `{"Records":[]}`, wantErr: ErrMalformed},
		{name: "unknown event without records", body: `{"Event":"s3:Whatever"}`, wantErr: ErrUnknownEvent},
		{name: "sns subscription confirmation", body: `{"Type":"SubscriptionConfirmation","Message":"x"}`, wantErr: ErrMalformed},
		{name: "sns without message", body: `{"Type":"Notification"}`, wantErr: ErrMalformed},
		{name: "sns message not json", body: `{"Type":"Notification","Message":"nope"}`, wantErr: ErrMalformed},
		{name: "huge body", body: `{"Records":[` + strings.Repeat(" ", 300<<10) + `]}`, wantErr: ErrTooLarge},
		{name: "small limit", body: rawPut, max: 10, wantErr: ErrTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Parse([]byte(tc.body), tc.max)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Parse(%.60q) error = %v, want %v", tc.body, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%.60q) error = %v", tc.body, err)
			}
			if m.Test != tc.wantTest || m.SNS != tc.wantSNS {
				t.Errorf("Parse(%.60q) Test,SNS = %v,%v, want %v,%v", tc.body, m.Test, m.SNS, tc.wantTest, tc.wantSNS)
			}
			var keys []string
			for _, r := range m.Records {
				keys = append(keys, r.Key)
			}
			if strings.Join(keys, "|") != strings.Join(tc.wantKeys, "|") {
				t.Errorf("keys = %q, want %q", keys, tc.wantKeys)
			}
			if len(m.Rejected) != len(tc.wantRejected) {
				t.Fatalf("rejected = %v, want %d", m.Rejected, len(tc.wantRejected))
			}
			for i, want := range tc.wantRejected {
				if !errors.Is(m.Rejected[i], want) {
					t.Errorf("rejected[%d] = %v, want %v", i, m.Rejected[i], want)
				}
			}
		})
	}
}

func TestParseFields(t *testing.T) {
	m, err := Parse([]byte(rawPut), 0)
	if err != nil {
		t.Fatal(err)
	}
	r := m.Records[0]
	want := Record{Kind: Created, EventName: "ObjectCreated:Put", Source: "aws:s3",
		Time: time.Date(2026, 11, 24, 1, 2, 3, 456e6, time.UTC), Bucket: "models",
		Key: "prod/my model/x/17.tar.gz", Size: 1234, ETag: "0123abcd", Sequencer: "0055AED6DCD90281E5"}
	if r != want {
		t.Errorf("record = %+v\nwant     %+v", r, want)
	}
}

func TestCreatedRoundTrip(t *testing.T) {
	keys := []string{"m/1.tar.gz", "odd key+plus/ü/%/7.tar.gz", "a b/c?d#e/2/model.tar.gz"}
	for _, key := range keys {
		for _, wrap := range []bool{false, true} {
			body := NewCreated("bkt", key, 42, `"abc"`, time.Unix(1700000000, 0))
			if wrap {
				body = WrapSNS(body, "arn:x", time.Unix(1700000000, 0))
			}
			m, err := Parse(body, 0)
			if err != nil {
				t.Fatalf("Parse(NewCreated(%q)) = %v", key, err)
			}
			if len(m.Records) != 1 || m.Records[0].Key != key || m.Records[0].Size != 42 || m.Records[0].ETag != "abc" || m.SNS != wrap {
				t.Errorf("NewCreated(%q) sns=%v round trip = %+v", key, wrap, m)
			}
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{rawPut, sns(rawPut), testEvent, sns(testEvent), `{}`, `{"Records":[{}]}`,
		`{"Type":"Notification","Message":"{\"Records\":[null]}"}`, `{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"%","size":1e99}}}]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := Parse(body, 0)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrUnknownEvent) {
				t.Fatalf("Parse error %v wraps no sentinel", err)
			}
			return
		}
		for _, r := range m.Records {
			if r.Bucket == "" || r.Key == "" || r.Kind == 0 || r.Size < -1 {
				t.Fatalf("Parse returned unusable record %+v", r)
			}
		}
		for _, re := range m.Rejected {
			if re.Err == nil {
				t.Fatalf("rejected record without error")
			}
		}
	})
}

// TestDeepRecordAlone: a record nested deeper than encoding/json accepts is rejected on
// its own; the message's good records are still used (raw and inside SNS).
func TestDeepRecordAlone(t *testing.T) {
	deep := `{"eventName":"ObjectCreated:Put","x":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`
	good := `{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"m/1.tar.gz"}}}`
	body := `{"Records":[` + deep + `,` + good + `]}`
	for _, b := range []string{body, sns(body)} {
		m, err := Parse([]byte(b), 1<<20)
		if err != nil {
			t.Fatalf("Parse = %v, want the good record", err)
		}
		if len(m.Records) != 1 || m.Records[0].Key != "m/1.tar.gz" || len(m.Rejected) != 1 || m.Rejected[0].Index != 0 {
			t.Errorf("Parse = %d records %+v, rejected %v; want the good one used and record 0 rejected", len(m.Records), m.Records, m.Rejected)
		}
	}
}

func TestMaxRecords(t *testing.T) {
	rec := `{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"m/1.tar.gz"}}}`
	body := `{"Records":[` + strings.TrimSuffix(strings.Repeat(rec+",", 250), ",") + `]}`
	m, err := ParseLimited([]byte(body), 1<<20, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Records) != DefaultMaxRecords || m.Unread != 250-DefaultMaxRecords {
		t.Errorf("ParseLimited: %d records, %d unread; want %d and %d", len(m.Records), m.Unread, DefaultMaxRecords, 250-DefaultMaxRecords)
	}
}

func TestSplitMalformed(t *testing.T) {
	for _, b := range []string{`{"Records":[}`, `{"a":1 "b":2}`, `{"a":"x}`, `{"a":[1,2}`, `{"a":1}x`, `{"a":}`, `{1:2}`} {
		if _, err := Parse([]byte(b), 0); !errors.Is(err, ErrMalformed) {
			t.Errorf("Parse(%s) = %v, want ErrMalformed", b, err)
		}
	}
}
