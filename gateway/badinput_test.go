package gateway

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/tfgate/tfgate/internal/tensor"
	tfpb "github.com/tfgate/tfgate/proto/tensorflow"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// rawBytes is a message that marshals to fixed bytes: it lets the test send what a
// Go client refuses to build (invalid UTF-8 in a string field).
type rawBytes []byte

func TestBadInputOverTheWire(t *testing.T) {
	s := startStack(t, stackOpts{maxRecv: 1 << 20, versions: []int64{1, 2}, routes: `  reviews:
    default: stable
    labels: {stable: 1}
  churn:
    default: "1"
  bare:
    pools: [main]
`})
	v := func(n int64) *tfgatev1.PredictRequest_Version { return &tfgatev1.PredictRequest_Version{Version: n} }
	badShape := &tfpb.TensorProto{Dtype: tfpb.DataType_DT_INT64, TensorShape: tensor.Shape(1, 16), Int64Val: []int64{1, 2, 3}}
	bigText := strings.Repeat("a", 1<<20+10)
	tests := []struct {
		name string
		req  *tfgatev1.PredictRequest
		code codes.Code
		msg  string
	}{
		{"no model", &tfgatev1.PredictRequest{Instances: text("x")}, codes.InvalidArgument, "model is required"},
		{"unknown model", &tfgatev1.PredictRequest{Model: "nope", Instances: text("x")}, codes.NotFound, `model "nope": unknown model: it is not in the routing config`},
		{"version not served", &tfgatev1.PredictRequest{Model: "reviews", Target: v(7), Instances: text("x")}, codes.NotFound, `model "reviews" version 7: version not served: no version directory under the model root and no host in pools [main] reports it AVAILABLE`},
		{"raw to version not served", &tfgatev1.PredictRequest{Model: "reviews", Target: v(7), RawInputs: rawText(t, make([]int64, 16), make([]int64, 16))}, codes.NotFound, `version 7`},
		{"negative version", &tfgatev1.PredictRequest{Model: "reviews", Target: v(-3), Instances: text("x")}, codes.InvalidArgument, "version -3: versions are positive integers"},
		{"unknown label", &tfgatev1.PredictRequest{Model: "reviews", Target: &tfgatev1.PredictRequest_Label{Label: "gold"}, Instances: text("x")}, codes.InvalidArgument, `label "gold": unknown version label: labels defined: "stable"`},
		{"empty label", &tfgatev1.PredictRequest{Model: "reviews", Target: &tfgatev1.PredictRequest_Label{}, Instances: text("x")}, codes.InvalidArgument, "label is set but empty"},
		{"no default route", &tfgatev1.PredictRequest{Model: "bare", Instances: text("x")}, codes.InvalidArgument, "name a version or one of its labels"},
		{"routing key too long", &tfgatev1.PredictRequest{Model: "reviews", RoutingKey: strings.Repeat("k", 65), Instances: text("x")}, codes.InvalidArgument, "routing_key is 65 bytes, at most 64"},
		{"no instances", &tfgatev1.PredictRequest{Model: "reviews"}, codes.InvalidArgument, "no instances"},
		{"instances and raw", &tfgatev1.PredictRequest{Model: "reviews", Instances: text("x"), RawInputs: rawText(t, make([]int64, 16), make([]int64, 16))}, codes.InvalidArgument, "send one or the other"},
		{"too many instances", &tfgatev1.PredictRequest{Model: "reviews", Instances: text(make([]string, 33)...)}, codes.InvalidArgument, "33 instances, at most 32 per request"},
		{"text over byte limit", &tfgatev1.PredictRequest{Model: "reviews", Instances: text(strings.Repeat("word ", 500))}, codes.InvalidArgument, "instance 0: text is 2500 bytes, at most 2048"},
		{"empty instance", &tfgatev1.PredictRequest{Model: "reviews", Instances: []*tfgatev1.Instance{{}}}, codes.InvalidArgument, "instance 0 is empty"},
		{"NaN feature", &tfgatev1.PredictRequest{Model: "churn", Instances: []*tfgatev1.Instance{{Numeric: map[string]float64{"f0": math.NaN()}}}}, codes.InvalidArgument, `numeric feature "f0" is NaN`},
		{"infinite feature", &tfgatev1.PredictRequest{Model: "churn", Instances: []*tfgatev1.Instance{{Numeric: map[string]float64{"f1": math.Inf(1)}}}}, codes.InvalidArgument, `numeric feature "f1" is +Inf`},
		{"unknown feature", &tfgatev1.PredictRequest{Model: "churn", Instances: []*tfgatev1.Instance{{Numeric: map[string]float64{"f0": 1, "age": 3}}}}, codes.InvalidArgument, `numeric feature "age": unknown to this model version`},
		{"missing feature", &tfgatev1.PredictRequest{Model: "churn", Instances: []*tfgatev1.Instance{{Categorical: map[string]string{"segment": "business"}}}}, codes.InvalidArgument, `instance 0: numeric feature "f0"`},
		{"too many features", &tfgatev1.PredictRequest{Model: "churn", Instances: []*tfgatev1.Instance{{Numeric: manyFeatures(17)}}}, codes.InvalidArgument, "17 features, at most 16"},
		{"kind not taken: text to linear", &tfgatev1.PredictRequest{Model: "churn", Instances: text("hello")}, codes.InvalidArgument, "takes no text"},
		{"kind not taken: features to text model", &tfgatev1.PredictRequest{Model: "reviews", Instances: []*tfgatev1.Instance{{Text: "hi", Numeric: map[string]float64{"x": 1}}}}, codes.InvalidArgument, "takes no numeric features"},
		{"raw bad shape", &tfgatev1.PredictRequest{Model: "reviews", Target: v(1), RawInputs: map[string]*tfpb.TensorProto{"input_ids": badShape}}, codes.InvalidArgument, `raw_inputs["input_ids"]: tensor shape mismatch: shape [1 16] has 16 elements but the tensor holds 3 values`},
		{"raw no dtype", &tfgatev1.PredictRequest{Model: "reviews", Target: v(1), RawInputs: map[string]*tfpb.TensorProto{"input_ids": {TensorShape: tensor.Shape(1)}}}, codes.InvalidArgument, "dtype is not set"},
		{"raw scalar", &tfgatev1.PredictRequest{Model: "reviews", Target: v(1), RawInputs: map[string]*tfpb.TensorProto{"input_ids": {Dtype: tfpb.DataType_DT_INT64, Int64Val: []int64{1}}}}, codes.InvalidArgument, "shape has no dimensions"},
		{"raw wrong input name", &tfgatev1.PredictRequest{Model: "reviews", Target: v(1), RawInputs: map[string]*tfpb.TensorProto{"tokens": badShapeFixed()}}, codes.InvalidArgument, "version 1"},
		{"top_k with raw_inputs", &tfgatev1.PredictRequest{Model: "reviews", Target: v(1), TopK: 3, RawInputs: rawText(t, make([]int64, 16), make([]int64, 16))}, codes.InvalidArgument, "top_k applies to typed instances"},
		{"top_k too large", &tfgatev1.PredictRequest{Model: "reviews", TopK: 5000, Instances: text("x")}, codes.InvalidArgument, "top_k is 5000, at most 1000"},
		{"over message size", &tfgatev1.PredictRequest{Model: "reviews", Instances: text(bigText)}, codes.ResourceExhausted, "larger than max"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := s.client.Predict(ctx, tc.req)
			if status.Code(err) != tc.code || !contains(err, tc.msg) {
				t.Errorf("Predict(%.200v) = %v; want code %v with message containing %q", tc.req, err, tc.code, tc.msg)
			}
		})
	}

	// What the backend refuses reaches the caller with TF Serving's text, the model and
	// the version, and without the backend's address.
	t.Run("backend error hides the host", func(t *testing.T) {
		ids := make([]int64, 16)
		ids[0] = 99999
		_, err := s.client.Predict(context.Background(), &tfgatev1.PredictRequest{Model: "reviews", Target: v(1), RawInputs: rawText(t, ids, make([]int64, 16))})
		msg := status.Convert(err).Message()
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(msg, "99999") || !strings.Contains(msg, `model "reviews" version 1`) {
			t.Errorf("out-of-vocabulary id = %v; want INVALID_ARGUMENT naming the model, version and TF Serving's text", err)
		}
		if strings.Contains(msg, "127.0.0.1") || strings.Contains(msg, "host ") {
			t.Errorf("caller-facing message %q names the backend host", msg)
		}
	})

	t.Run("invalid UTF-8 text", func(t *testing.T) {
		// Instance{text: "\xff"} inside PredictRequest{model: "reviews", instances: [...]}.
		var inst []byte
		inst = protowire.AppendTag(inst, 1, protowire.BytesType)
		inst = protowire.AppendBytes(inst, []byte("ok \xff\xfe bad"))
		b, err := proto.Marshal(&tfgatev1.PredictRequest{Model: "reviews"})
		if err != nil {
			t.Fatal(err)
		}
		b = protowire.AppendTag(b, 5, protowire.BytesType)
		b = protowire.AppendBytes(b, inst)
		out := new(tfgatev1.PredictResponse)
		err = s.conn.Invoke(context.Background(), tfgatev1.GatewayService_Predict_FullMethodName, rawBytes(b), out, grpcRawCodec())
		if status.Code(err) != codes.InvalidArgument || !contains(err, "must be valid UTF-8") {
			t.Errorf("Predict with invalid UTF-8 text = %v; want INVALID_ARGUMENT saying strings must be valid UTF-8", err)
		}
	})

	if got := s.srv.Stats().Requests[codes.InvalidArgument]; got < 20 {
		t.Errorf("INVALID_ARGUMENT requests counted = %d, want >= 20", got)
	}
}

func manyFeatures(n int) map[string]float64 {
	m := map[string]float64{}
	for i := range n {
		m[strings.Repeat("x", i+1)] = 1
	}
	return m
}

func badShapeFixed() *tfpb.TensorProto {
	t, _ := tensor.FromInt64(make([]int64, 16), 1, 16)
	return t
}
