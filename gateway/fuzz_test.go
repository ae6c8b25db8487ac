package gateway

import (
	"math"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/tfgate/tfgate/gateway/route"
	"github.com/tfgate/tfgate/internal/tensor"
	tfpb "github.com/tfgate/tfgate/proto/tensorflow"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// FuzzCheckRequest drives the gateway's request checks (what runs before routing
// and preprocessing) with arbitrary wire bytes: no panic, and a request it accepts
// respects every limit.
func FuzzCheckRequest(f *testing.F) {
	lim := route.Limits{MaxInstances: 8, MaxTextBytes: 64, MaxRoutingKeyBytes: 16, MaxFeatures: 4}
	ids, _ := tensor.FromInt64([]int64{1, 2, 3, 4}, 1, 4)
	seeds := []*tfgatev1.PredictRequest{
		{Model: "m", Instances: []*tfgatev1.Instance{{Text: "hello"}}},
		{Model: "m", Target: &tfgatev1.PredictRequest_Version{Version: 3}, RoutingKey: "k", Instances: []*tfgatev1.Instance{{Numeric: map[string]float64{"a": 1, "b": math.NaN()}}}},
		{Model: "m", Target: &tfgatev1.PredictRequest_Label{Label: "x"}, RawInputs: map[string]*tfpb.TensorProto{"input_ids": ids}},
		{Model: "m", RawInputs: map[string]*tfpb.TensorProto{"x": {Dtype: tfpb.DataType_DT_FLOAT, TensorShape: tensor.Shape(2, 3), FloatVal: []float32{1}}}},
		{Model: "m", RawInputs: map[string]*tfpb.TensorProto{"x": {Dtype: tfpb.DataType_DT_INT32, TensorShape: tensor.Shape(-1, 1<<40, 1<<40), TensorContent: []byte{1, 2, 3}}}},
	}
	for _, s := range seeds {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var req tfgatev1.PredictRequest
		if proto.Unmarshal(b, &req) != nil {
			return
		}
		if err := checkRequest(&req, nil, lim); err != nil {
			if Code(err) == 0 {
				t.Fatalf("checkRequest error %v maps to OK", err)
			}
			return
		}
		if req.GetModel() == "" || len(req.GetRoutingKey()) > lim.MaxRoutingKeyBytes || len(req.GetInstances()) > lim.MaxInstances {
			t.Fatalf("checkRequest accepted a request over its limits: %v", &req)
		}
		for _, in := range req.GetInstances() {
			if len(in.GetText()) > lim.MaxTextBytes || len(in.GetNumeric())+len(in.GetCategorical()) > lim.MaxFeatures {
				t.Fatalf("checkRequest accepted an instance over its limits: %v", in)
			}
			for _, v := range in.GetNumeric() {
				if math.IsNaN(v) || math.IsInf(v, 0) {
					t.Fatalf("checkRequest accepted a non-finite feature: %v", in)
				}
			}
		}
	})
}
