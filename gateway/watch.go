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

// hasRead reports whether the watcher (or a reload) has read the file fi
// describes: from then on, a change of content in it has been applied.
func (b *builder) hasRead(fi os.FileInfo) bool {
	b.reloadMu.Lock()
	defer b.reloadMu.Unlock()
	return b.fileStamp.fi != nil && os.SameFile(b.fileStamp.fi, fi) && b.fileStamp.mod.Equal(fi.ModTime())
}

// poll reloads the config if the file's content changed since the last load.
func (b *builder) poll() {
	b.reloadMu.Lock()
	defer b.reloadMu.Unlock()
	fi, err := os.Stat(b.configPath)
	if err != nil {
		if b.fileStamp.size >= 0 { // log a vanished file once
			b.log.Warn("gateway: routing config unreadable; keeping the last good config", "file", b.configPath, "err", err)
			b.fileStamp.size = -1
		}
		return
	}
	if b.fileStamp.unchanged(fi) {
		return
	}
	st, data, err := readStamped(b.configPath)
	if err != nil {
		return
	}
	changed := st.hash != b.fileStamp.hash
	b.fileStamp = st
	if changed {
		_ = b.apply(data) // failures are logged and counted by apply
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

// run is [Server.Run]: it watches the config file and rebuilds the snapshot
// whenever the config, the backends' readiness or the preprocessing specs
// change, and runs signature checks, until ctx is done. It returns after every
// goroutine it started has stopped.
func (b *builder) run(ctx context.Context) error {
	b.sig.start(ctx)
	defer b.sig.wait()
	var lastDur time.Duration
	var lastEnd time.Time
	rebuild := func() {
		start := time.Now()
		b.rebuild()
		lastEnd = time.Now()
		lastDur = lastEnd.Sub(start)
	}
	rebuild() // start checks that were deferred until Run
	var tick <-chan time.Time
	if b.watchInterval > 0 {
		t := time.NewTicker(b.watchInterval)
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
	firstRound := b.backendsReady
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick:
			b.poll()
		case <-firstRound:
			firstRound = nil
			request()
		case <-b.backends.Changes():
			request()
		case <-b.specs.Changes():
			request()
		case <-b.rebuildCh:
			request()
		case <-throttled:
			throttled = nil
			rebuild()
		}
	}
}
