package modelsync

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tfgate/tfgate/modelsync/event"
	"github.com/tfgate/tfgate/modelsync/journal"
)

// The tests in this file are what an attacker with write access to the models bucket
// tried: each must be rejected, journaled with a bounded reason, acknowledged (never
// retried), and leave nothing behind.

type tarEnt struct {
	name, body, link string
	typ              byte
}

func tarGz(t *testing.T, ents ...tarEnt) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: 0o644, Size: int64(len(e.body)), Format: tar.FormatPAX}
		if e.typ == tar.TypeDir {
			h.Mode = 0o755
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.body))
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

func reg(name, body string) tarEnt { return tarEnt{name: name, body: body, typ: tar.TypeReg} }

// chainArchive is the symlink chain from the security report: d/d/d/up resolves to the
// version root, and the weights file goes through it and one level further.
func chainArchive(t *testing.T) []byte {
	return tarGz(t,
		reg("saved_model.pb", "graph"),
		reg("assets.extra/servingsim.json", `{"kind":"identity"}`),
		tarEnt{name: "d/d/d/", typ: tar.TypeDir},
		tarEnt{name: "d/d/d/up", link: "../../..", typ: tar.TypeSymlink},
		tarEnt{name: "variables/variables.data-00000-of-00001", link: "../d/d/d/up/../../../../etc/passwd", typ: tar.TypeSymlink},
	)
}

func goodArchive(t *testing.T, weights string) []byte {
	return tarGz(t, reg("saved_model.pb", "graph"), reg("variables/variables.index", "i"),
		reg("variables/variables.data-00000-of-00001", weights), reg("assets.extra/servingsim.json", `{"kind":"identity"}`))
}

// entries lists what is under the base path, the state directory left out.
func entries(t *testing.T, base string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(base, func(p string, d os.DirEntry, err error) error {
		rel, _ := filepath.Rel(base, p)
		if err != nil || rel == "." {
			return err
		}
		if rel == ".modelsync" {
			return filepath.SkipDir
		}
		out = append(out, filepath.ToSlash(rel))
		return nil
	})
	return out
}

func TestHostileArchivesRejectedOnce(t *testing.T) {
	e := newEnv(t)
	sc := e.start(e.config(), Deps{})
	long := strings.Repeat("n", 300)
	for key, body := range map[string][]byte{
		"models/chain/1.tar.gz":    chainArchive(t),
		"models/longname/1.tar.gz": tarGz(t, reg("saved_model.pb", "g"), reg("assets/"+long, "x")),
		"models/longlink/1.tar.gz": tarGz(t, reg("saved_model.pb", "g"), tarEnt{name: "l", link: strings.Repeat("a/", 2100), typ: tar.TypeSymlink}),
	} {
		e.notify(key, int64(len(body)), e.putRaw(key, body))
	}
	got := sc.wait(t, 3, outcome(journal.Rejected))
	for _, en := range got {
		if en.Receives != 1 {
			t.Errorf("%s: rejected on receive %d, want the first (not retried)", en.Key, en.Receives)
		}
	}
	e.queueEmpty()
	if v, f := e.sqs.Count(t, e.queue.DLQURL); v+f != 0 {
		t.Errorf("DLQ holds %d messages, want 0: rejections are acknowledged", v+f)
	}
	if got := entries(t, e.base); len(got) != 0 {
		t.Errorf("rejected archives left %q under the base path", got)
	}
}

func TestHostileNotifications(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	sc := e.start(cfg, Deps{})

	// A 250,000-character key: rejected, with a journal line readers can still read.
	huge := "models/" + strings.Repeat("k", 250000) + ".tar.gz"
	e.notify(huge, 1, "")
	// 200 models that do not exist, one whose name has a newline, one not UTF-8.
	var recs [][]byte
	for i := range 200 {
		recs = append(recs, event.NewCreated(e.bucket, fmt.Sprintf("models/ghost-%d/1.tar.gz", i), 1, "", time.Now()))
	}
	recs = append(recs, event.NewCreated(e.bucket, "models/two\nlines/1.tar.gz", 1, "", time.Now()),
		event.NewCreated(e.bucket, "models/bad\xffname/1.tar.gz", 1, "", time.Now()))
	e.sqs.Send(t, e.queue.URL, multiRecord(recs...))
	// 10,001 records that name nothing, a record nested past the JSON decoder's limit,
	// and one good record in the same message.
	key := "models/good/3.tar.gz"
	etag := e.putRaw(key, goodArchive(t, "w"))
	junk := strings.TrimSuffix(strings.Repeat("{},", 10001), ",")
	deep := `{"eventName":"ObjectCreated:Put","x":` + strings.Repeat("[", 11000) + strings.Repeat("]", 11000) + `}`
	good := strings.TrimSuffix(strings.TrimPrefix(string(event.NewCreated(e.bucket, key, 1, etag, time.Now())), `{"Records":[`), `]}`)
	e.sqs.Send(t, e.queue.URL, `{"Records":[`+deep+`,`+good+`,`+junk+`]}`)

	sc.wait(t, 1, func(en journal.Entry) bool { return en.Outcome == journal.Published && en.Model == "good" })
	e.queueEmpty()
	all := sc.snapshot()
	var hugeLines, summaries, ghosts int
	for _, en := range all {
		switch {
		case strings.HasPrefix(en.Key, "models/kkkk"):
			hugeLines++
		case strings.Contains(en.Reason, "unusable record"):
			summaries++
			if !strings.Contains(en.Reason, "past the limit of 100") {
				t.Errorf("summary %q does not say records went unread", en.Reason)
			}
		case strings.HasPrefix(en.Model, "ghost-"):
			ghosts++
		}
	}
	if hugeLines != 1 || summaries != 1 {
		t.Errorf("journal: %d entries for the huge key, %d summaries; want 1 and 1 (of %d entries)", hugeLines, summaries, len(all))
	}
	if len(all) > 200 {
		t.Errorf("%d journal entries for 4 messages; records per message are capped at %d", len(all), cfg.MaxRecordsPerMessage)
	}
	if ghosts == 0 {
		t.Errorf("no journal entry for the ghost models")
	}
	// history works, and no model directory exists but the published one.
	es, bad, err := journal.Query(filepath.Join(e.base, ".modelsync"), journal.Filter{})
	if err != nil || bad != 0 || len(es) != len(all) {
		t.Errorf("journal.Query = %d entries, %d bad, %v; want %d, 0, nil", len(es), bad, err, len(all))
	}
	for _, p := range entries(t, e.base) {
		if !strings.HasPrefix(p, "good") && !strings.HasPrefix(p, ".") {
			t.Errorf("a notification left %q", p)
		}
	}
}

func TestCatchUpRemembersRejectedAndFallsBack(t *testing.T) {
	e := newEnv(t)
	e.putRaw("models/m/1.tar.gz", goodArchive(t, "one"))
	e.putRaw("models/m/2.tar.gz", chainArchive(t))
	f := e.flaky(nil)
	cfg := e.config()
	cfg.QueueURL = ""
	cfg.CatchUp = true
	cfg.CatchUpInterval = Duration(200 * time.Millisecond)
	sc := e.start(cfg, Deps{})

	// Pass 1: the newest version is rejected, the one before stands in.
	sc.wait(t, 1, func(en journal.Entry) bool { return en.Outcome == journal.Rejected && en.Version == 2 })
	pub := sc.wait(t, 1, outcome(journal.Published))[0]
	if pub.Version != 1 || !strings.Contains(pub.Reason, "fallback") {
		t.Errorf("published %+v, want version 1 as a catch-up fallback", pub)
	}
	gets := f.gets.Load()
	// Later passes do not fetch the unchanged hostile object again; a new model shows a
	// later pass ran.
	e.putRaw("models/other/1.tar.gz", goodArchive(t, "o"))
	sc.wait(t, 1, func(en journal.Entry) bool { return en.Outcome == journal.Published && en.Model == "other" })
	if n := f.gets.Load() - gets; n != 1 {
		t.Errorf("%d GETs in the passes after the rejection, want 1 (the new model only)", n)
	}
	// A new upload under the same key is judged afresh.
	e.putRaw("models/m/2.tar.gz", goodArchive(t, "two"))
	sc.wait(t, 1, func(en journal.Entry) bool { return en.Outcome == journal.Published && en.Version == 2 })
}
