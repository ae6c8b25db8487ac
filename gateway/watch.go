package gateway

import (
	"context"
	"os"
	"time"

	"github.com/tfgate/tfgate/gateway/route"
)

// fileStamp identifies a config file's content cheaply: a changed file identity
// (a rename replaced it), mtime or size triggers a read, and only a changed
// content hash triggers a reload.
type fileStamp struct {
	fi   os.FileInfo
	mod  time.Time
	size int64
	hash uint64
}

// racyWindow: file times are coarse (a kernel tick), so two writes of the same
// size within one tick leave mtime and size unchanged. While the file's mtime is
// this recent, every poll re-reads it and compares hashes (git's "racily clean").
const racyWindow = 2 * time.Second

func readStamped(path string) (fileStamp, []byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fileStamp{}, nil, err
	}
	return fileStamp{fi: fi, mod: fi.ModTime(), size: fi.Size(), hash: route.Hash(b)}, b, nil
}

// unchanged reports whether fi certainly shows the same content as st.
func (st fileStamp) unchanged(fi os.FileInfo) bool {
	return st.fi != nil && os.SameFile(st.fi, fi) && fi.ModTime().Equal(st.mod) && fi.Size() == st.size &&
		time.Since(fi.ModTime()) > racyWindow
}

// poll reloads the config if the file's content changed since the last load.
func (s *Server) poll() {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	fi, err := os.Stat(s.opts.ConfigPath)
	if err != nil {
		if s.fileStamp.size >= 0 { // log a vanished file once
			s.log.Warn("gateway: routing config unreadable; keeping the last good config", "file", s.opts.ConfigPath, "err", err)
			s.fileStamp.size = -1
		}
		return
	}
	if s.fileStamp.unchanged(fi) {
		return
	}
	st, data, err := readStamped(s.opts.ConfigPath)
	if err != nil {
		return
	}
	changed := st.hash != s.fileStamp.hash
	s.fileStamp = st
	if changed {
		_ = s.apply(data) // failures are logged and counted by apply
	}
}

// rebuildDuty bounds the share of one core that rebuilds caused by readiness,
// spec and signature-check changes may take: after a rebuild that took d, the next
// such rebuild waits until rebuildDuty*d has passed since it ended. A rebuild walks
// every model, so at 50,000 models (tens of milliseconds each) a stream of
// signature checks finishing one by one would otherwise rebuild back to back;
// throttled, the changes that arrive meanwhile are folded into one rebuild. At
// small scale a rebuild takes microseconds and the wait is nothing. Config reloads
// are not throttled.
const rebuildDuty = 4

// rebuildDelay is how long to wait before the next throttled rebuild, given how
// long the last one took and how long ago it ended.
func rebuildDelay(last, sinceEnd time.Duration) time.Duration {
	return max(0, rebuildDuty*last-sinceEnd)
}

// Run watches the config file and rebuilds the routing snapshot whenever the
// config, the backends' readiness or the preprocessing specs change, and runs
// signature checks, until ctx is done. It returns after every goroutine it
// started has stopped.
func (s *Server) Run(ctx context.Context) error {
	s.sig.start(ctx)
	defer s.sig.wait()
	var lastDur time.Duration
	var lastEnd time.Time
	rebuild := func() {
		start := time.Now()
		s.rebuild()
		lastEnd = time.Now()
		lastDur = lastEnd.Sub(start)
	}
	rebuild() // start checks that were deferred until Run
	var tick <-chan time.Time
	if s.opts.WatchInterval > 0 {
		t := time.NewTicker(s.opts.WatchInterval)
		defer t.Stop()
		tick = t.C
	}
	var throttle *time.Timer
	var throttled <-chan time.Time
	defer func() {
		if throttle != nil {
			throttle.Stop()
		}
	}()
	request := func() {
		if throttled != nil {
			return // already scheduled: this change is folded into it
		}
		d := rebuildDelay(lastDur, time.Since(lastEnd))
		if d == 0 {
			rebuild()
			return
		}
		throttle = time.NewTimer(d)
		throttled = throttle.C
	}
	// Rebuild when the backends finish their first full round, so that a snapshot
	// records it (Settled) even if that round changed nothing.
	firstRound := s.opts.BackendsReady
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick:
			s.poll()
		case <-firstRound:
			firstRound = nil
			request()
		case <-s.opts.Backends.Changes():
			request()
		case <-s.opts.Specs.Changes():
			request()
		case <-s.rebuildCh:
			request()
		case <-throttled:
			throttled = nil
			rebuild()
		}
	}
}

// Close flushes the batchers (after the gRPC server stopped taking requests) and
// unregisters metrics.
func (s *Server) Close(ctx context.Context) error {
	err := s.group.Close(ctx)
	if uerr := s.reg.Unregister(); err == nil {
		err = uerr
	}
	return err
}
