// Package testwait is the one place tests wait for something that another
// goroutine or process makes true: a model loading, a watcher handling an
// answer, a message reaching a queue.
//
// A wait synchronizes with an event; it never measures time. The bound,
// Timeout, only turns a hang into a failure that says what was awaited, so a
// test must never depend on its value, and a test that needs "nothing happened"
// waits for the event after which it would have happened (the answer handled,
// the call rejected) instead of for a stretch of silence.
//
// Until and UntilNil must be called from the goroutine running the test (they
// call Fatalf); cond and check run on that goroutine too, so they may use t.
package testwait
