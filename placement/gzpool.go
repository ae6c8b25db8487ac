package placement

import (
	"compress/gzip"
	"io"
	"sync"
)

// Every KV value here is gzip, and a gzip.Writer is ~800 KB of compressor state
// (a reader ~40 KB): made anew per value they were the gateway's largest source
// of garbage in the fleet bench (1.6 GB of writers and 1.2 GB of readers in 200 s
// of the leader's decisions, demand reports and state watches). Pooled, they are
// made once per concurrent user.
var (
	gzWriters sync.Pool // *gzip.Writer at gzip.BestSpeed
	gzReaders sync.Pool // *gzip.Reader
)

// getGzipWriter returns a BestSpeed writer onto w; give it back with putGzipWriter
// after Close.
func getGzipWriter(w io.Writer) *gzip.Writer {
	if zw, ok := gzWriters.Get().(*gzip.Writer); ok {
		zw.Reset(w)
		return zw
	}
	zw, _ := gzip.NewWriterLevel(w, gzip.BestSpeed) // the level is valid
	return zw
}

func putGzipWriter(zw *gzip.Writer) {
	zw.Reset(io.Discard) // drop the reference to the caller's buffer
	gzWriters.Put(zw)
}

// getGzipReader returns a reader of r's gzip stream; give it back with
// putGzipReader once done reading.
func getGzipReader(r io.Reader) (*gzip.Reader, error) {
	if zr, ok := gzReaders.Get().(*gzip.Reader); ok {
		if err := zr.Reset(r); err != nil {
			gzReaders.Put(zr)
			return nil, err
		}
		return zr, nil
	}
	return gzip.NewReader(r)
}

func putGzipReader(zr *gzip.Reader) { gzReaders.Put(zr) }
