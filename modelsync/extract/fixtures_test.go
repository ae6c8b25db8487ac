package extract

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.tar.gz from the generators in fixtures_test.go")

// ent is one tar entry in a generated fixture.
type ent struct {
	name string
	typ  byte
	body string
	size int64 // header size when body is not the content (bombs, truncation)
	link string
	mode int64
}

func file(name, body string) ent { return ent{name: name, typ: tar.TypeReg, body: body} }
func dir(name string) ent        { return ent{name: name, typ: tar.TypeDir} }

func buildTarGz(t testing.TB, ents []ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	if !writeTarGz(&buf, ents) {
		t.Fatalf("cannot write the tar headers of %+v", ents)
	}
	return buf.Bytes()
}

// writeTarGz writes ents as a .tar.gz; false when archive/tar refuses a header.
func writeTarGz(buf *bytes.Buffer, ents []ent) bool {
	zw, _ := gzip.NewWriterLevel(buf, gzip.BestCompression)
	tw := tar.NewWriter(zw)
	mt := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: 0o644, ModTime: mt, Format: tar.FormatPAX}
		if e.mode != 0 {
			h.Mode = e.mode
		}
		if e.typ == tar.TypeDir {
			h.Mode = 0o755
		}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.body))
			if e.size != 0 {
				h.Size = e.size
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return false
		}
		if e.body != "" {
			if _, err := tw.Write([]byte(e.body)); err != nil && e.size == 0 {
				return false
			}
		}
	}
	// A bomb's header claims more than its body: Close would fail; flush what we have.
	if err := tw.Close(); err != nil {
		tw.Flush()
	}
	zw.Close()
	return true
}

// model is a small, valid model version directory's contents.
func model(prefix string) []ent {
	return []ent{
		dir(prefix + "variables/"),
		file(prefix+"saved_model.pb", "graph"),
		file(prefix+"variables/variables.index", "index"),
		file(prefix+"variables/variables.data-00000-of-00001", strings.Repeat("w", 3000)),
		file(prefix+"assets/vocab.txt", "a\nb\n"),
		file(prefix+"assets.extra/servingsim.json", `{"kind":"identity"}`),
	}
}

func withGood(ents ...ent) []ent { return append(model(""), ents...) }

// fixture is a committed archive and what extracting it must do.
type fixture struct {
	name string
	gen  func(t testing.TB) []byte
	want error // nil: valid
	opts Options
}

func tarFixture(ents ...ent) func(t testing.TB) []byte {
	return func(t testing.TB) []byte { return buildTarGz(t, ents) }
}

func fixtures() []fixture {
	zeros := strings.Repeat("\x00", 1<<20)
	var bomb []ent
	for i := range 40 {
		bomb = append(bomb, file("variables/shard-"+string(rune('a'+i%26))+string(rune('a'+i/26)), zeros))
	}
	var many []ent
	for i := range 101 {
		many = append(many, file("f"+strings.Repeat("x", i), "x"))
	}
	small := Options{Limits: Limits{MaxTotalBytes: 32 << 20, MaxEntries: 100}}
	return []fixture{
		{name: "good-contents", gen: tarFixture(model("")...)},
		{name: "good-rooted", gen: tarFixture(append([]ent{dir("17/")}, model("17/")...)...), opts: Options{Root: "17"}},
		{name: "good-dot-prefix", gen: tarFixture(append([]ent{dir("./")}, model("./")...)...)},
		{name: "good-internal-links", gen: tarFixture(withGood(
			ent{name: "assets/vocab-link.txt", typ: tar.TypeSymlink, link: "vocab.txt"},
			ent{name: "assets.extra/up.json", typ: tar.TypeSymlink, link: "../assets.extra/servingsim.json"},
			ent{name: "variables/hard.index", typ: tar.TypeLink, link: "variables/variables.index"})...)},
		{name: "traversal", gen: tarFixture(withGood(file("../evil", "pwned"))...), want: ErrUnsafe},
		{name: "traversal-nested", gen: tarFixture(withGood(file("assets/../../evil", "pwned"))...), want: ErrUnsafe},
		{name: "absolute", gen: tarFixture(withGood(file("/tmp/tfgate-evil", "pwned"))...), want: ErrUnsafe},
		{name: "symlink-escape", gen: tarFixture(withGood(ent{name: "assets/up", typ: tar.TypeSymlink, link: "../../evil"})...), want: ErrUnsafe},
		{name: "symlink-absolute", gen: tarFixture(withGood(ent{name: "etc", typ: tar.TypeSymlink, link: "/etc"})...), want: ErrUnsafe},
		{name: "symlink-write-through", gen: tarFixture(withGood(
			ent{name: "lnk", typ: tar.TypeSymlink, link: "assets"}, file("lnk/evil", "pwned"))...), want: ErrUnsafe},
		{name: "symlink-overwrite", gen: tarFixture(withGood(
			ent{name: "lnk", typ: tar.TypeSymlink, link: "saved_model.pb"}, file("lnk", "pwned"))...), want: ErrUnsafe},
		{name: "hardlink-escape", gen: tarFixture(withGood(ent{name: "pw", typ: tar.TypeLink, link: "../../../etc/passwd"})...), want: ErrUnsafe},
		{name: "hardlink-absolute", gen: tarFixture(withGood(ent{name: "pw", typ: tar.TypeLink, link: "/etc/passwd"})...), want: ErrUnsafe},
		{name: "hardlink-to-symlink", gen: tarFixture(withGood(
			ent{name: "s", typ: tar.TypeSymlink, link: "saved_model.pb"}, ent{name: "h", typ: tar.TypeLink, link: "s"})...), want: ErrUnsafe},
		{name: "device", gen: tarFixture(withGood(ent{name: "null", typ: tar.TypeChar})...), want: ErrUnsafe},
		{name: "block-device", gen: tarFixture(withGood(ent{name: "sda", typ: tar.TypeBlock})...), want: ErrUnsafe},
		{name: "fifo", gen: tarFixture(withGood(ent{name: "pipe", typ: tar.TypeFifo})...), want: ErrUnsafe},
		{name: "duplicate", gen: tarFixture(withGood(file("saved_model.pb", "again"))...), want: ErrUnsafe},
		{name: "file-as-parent", gen: tarFixture(withGood(file("saved_model.pb/x", "x"))...), want: ErrUnsafe},
		{name: "mixed-root", gen: tarFixture(append(model("17/"), file("stray.txt", "x"))...), want: ErrUnsafe, opts: Options{Root: "17"}},
		{name: "bomb-header", gen: tarFixture(withGood(ent{name: "variables/huge", typ: tar.TypeReg, body: "x", size: 64 << 30})...), want: ErrLimit},
		{name: "bomb-total", gen: tarFixture(bomb...), want: ErrLimit, opts: small},
		{name: "bomb-entries", gen: tarFixture(many...), want: ErrLimit, opts: small},
		{name: "truncated-gzip", gen: func(t testing.TB) []byte {
			b := buildTarGz(t, model(""))
			return b[:len(b)/2]
		}, want: ErrCorrupt},
		{name: "truncated-trailer", gen: func(t testing.TB) []byte {
			b := buildTarGz(t, model(""))
			return b[:len(b)-4]
		}, want: ErrCorrupt},
		{name: "not-gzip", gen: func(testing.TB) []byte { return []byte("this is not a model\n") }, want: ErrCorrupt},
		{name: "gzip-not-tar", gen: func(testing.TB) []byte {
			var b bytes.Buffer
			zw := gzip.NewWriter(&b)
			zw.Write(bytes.Repeat([]byte("not a tar header "), 100))
			zw.Close()
			return b.Bytes()
		}, want: ErrCorrupt},
		{name: "empty", gen: tarFixture(), want: ErrEmpty},
		{name: "only-dirs", gen: tarFixture(dir("assets/"), dir("variables/")), want: ErrEmpty},
	}
}

func fixturePath(name string) string { return filepath.Join("testdata", name+".tar.gz") }

func loadFixture(t testing.TB, fx fixture) []byte {
	t.Helper()
	p := fixturePath(fx.name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, fx.gen(t), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (regenerate with: go test ./modelsync/extract -run TestFixtures -update)", err)
	}
	return b
}
