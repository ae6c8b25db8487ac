package servingpb

import (
	"fmt"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// TestSchemaMatchesTFServing pins messages whose fields drifted from TF Serving's
// own apis/*.proto once: our copies may carry only what the real schema declares
// (number and name), or a real server and our code disagree on the wire.
func TestSchemaMatchesTFServing(t *testing.T) {
	tests := []struct {
		msg  proto.Message
		want []string // "number name", in declaration order
	}{
		{&ReloadConfigRequest{}, []string{"1 config", "2 metric_names"}},
		{&ReloadConfigResponse{}, []string{"1 status", "2 metric"}},
		{&Metric{}, []string{"1 name", "2 int64_value_increase"}},
	}
	for _, tc := range tests {
		d := tc.msg.ProtoReflect().Descriptor()
		t.Run(string(d.Name()), func(t *testing.T) {
			if got := fieldsOf(d); !slices.Equal(got, tc.want) {
				t.Errorf("%s declares fields %q, TF Serving declares %q", d.FullName(), got, tc.want)
			}
		})
	}
}

func fieldsOf(d protoreflect.MessageDescriptor) []string {
	var out []string
	for i := range d.Fields().Len() {
		f := d.Fields().Get(i)
		out = append(out, fmt.Sprintf("%d %s", f.Number(), f.Name()))
	}
	return out
}
