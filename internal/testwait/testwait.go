package testwait

import (
	"errors"
	"testing"
	"time"
)

// Timeout bounds every wait. It is far above what any event takes on a loaded
// CI machine; reaching it means the event is not coming.
const Timeout = 30 * time.Second

// maxPause is the longest pause between two polls: short enough that a wait
// ends soon after its event, long enough not to load a busy machine.
const maxPause = 50 * time.Millisecond

var errNotYet = errors.New("condition not met")

// Until polls cond until it returns true, failing tb with what it waited for
// once Timeout has passed.
func Until(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	UntilNil(tb, what, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
}

// UntilNil polls check until it returns nil, failing tb with what it waited for
// and check's last error once Timeout has passed.
func UntilNil(tb testing.TB, what string, check func() error) {
	tb.Helper()
	untilNil(tb, Timeout, what, check)
}

// UntilNilWithin is UntilNil with its own bound, for a wait that includes
// something slow by design (a Consul session TTL running out after a restart).
func UntilNilWithin(tb testing.TB, timeout time.Duration, what string, check func() error) {
	tb.Helper()
	untilNil(tb, timeout, what, check)
}

func untilNil(tb testing.TB, timeout time.Duration, what string, check func() error) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	pause := time.Millisecond
	for {
		err := check()
		if err == nil {
			return
		}
		if !time.Now().Before(deadline) {
			if err == errNotYet {
				tb.Fatalf("testwait: gave up after %v waiting for %s", timeout, what)
			}
			tb.Fatalf("testwait: gave up after %v waiting for %s; last: %v", timeout, what, err)
		}
		time.Sleep(pause)
		pause = min(2*pause, maxPause)
	}
}
