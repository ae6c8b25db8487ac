package gateway

import (
	"testing"

	"go.uber.org/goleak"
)

// The exposure log's rotation library starts one goroutine per file at the
// first write and never stops it (natefinch/lumberjack#56); it holds no file.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("gopkg.in/natefinch/lumberjack%2ev2.(*Logger).millRun"))
}
