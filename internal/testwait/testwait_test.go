package testwait

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
)

func TestUntilReturnsOnceTrue(t *testing.T) {
	var n atomic.Int32
	go func() {
		for range 3 {
			n.Add(1)
		}
	}()
	Until(t, "three increments", func() bool { return n.Load() == 3 })
}

func TestUntilNilPollsUntilNil(t *testing.T) {
	calls := 0
	UntilNil(t, "the third call", func() error {
		if calls++; calls < 3 {
			return fmt.Errorf("call %d", calls)
		}
		return nil
	})
	if calls != 3 {
		t.Errorf("check called %d times, want 3 (it returns as soon as check does)", calls)
	}
}

// fatalTB records Fatalf instead of stopping, to test the failure message.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	panic(f)
}

func failure(t *testing.T, wait func(testing.TB)) (msg string) {
	t.Helper()
	tb := &fatalTB{TB: t}
	defer func() {
		if r := recover(); r != tb {
			t.Fatalf("wait did not fail (recovered %v)", r)
		}
		msg = tb.msg
	}()
	wait(tb)
	return ""
}

func TestFailureSaysWhatAndLast(t *testing.T) {
	tests := []struct {
		name  string
		check func() error
		want  []string
	}{
		{"bool", func() error { return errNotYet }, []string{"gave up after 0s waiting for the answer"}},
		{"error", func() error { return errors.New("still 41") }, []string{"waiting for the answer", "; last: still 41"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msg := failure(t, func(tb testing.TB) { untilNil(tb, 0, "the answer", tc.check) })
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("failure %q: want it to contain %q", msg, w)
				}
			}
			if tc.name == "bool" && strings.Contains(msg, "last:") {
				t.Errorf("failure %q of a bool condition names a last error", msg)
			}
		})
	}
}
