package tensor

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// KeptRecords returns m's unknown fields when they are kept wire records of the
// tensor map field num (the first record tells: the gateway's codec keeps a
// map's records, and nothing else, as unknown fields), else nil.
func KeptRecords(m protoreflect.Message, num protowire.Number) []byte {
	u := m.GetUnknown()
	if len(u) == 0 || u[0] != byte(protowire.EncodeTag(num, protowire.BytesType)) {
		return nil
	}
	return u
}

// DecodeKept decodes msg's kept records of map field num into the map (a no-op
// without them).
func DecodeKept(msg proto.Message, num protowire.Number) error {
	m := msg.ProtoReflect()
	recs := KeptRecords(m, num)
	if recs == nil {
		return nil
	}
	m.SetUnknown(nil)
	if err := (proto.UnmarshalOptions{Merge: true}).Unmarshal(recs, msg); err != nil {
		return fmt.Errorf("decode the kept tensors: %w", err)
	}
	return nil
}
