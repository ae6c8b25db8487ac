package batching

import (
	"fmt"
	"strings"
	"testing"
)

// The compatibility key is built without fmt; its bytes are what the fmt
// version wrote.
func TestWriteKeyPartMatchesFmt(t *testing.T) {
	for _, s := range []string{"", "input_ids", "a:b\x00c", "ünïcode"} {
		var got strings.Builder
		writeKeyPart(&got, s)
		if want := fmt.Sprintf("%d:%s\x00", len(s), s); got.String() != want {
			t.Errorf("writeKeyPart(%q) = %q, want %q", s, got.String(), want)
		}
	}
}
