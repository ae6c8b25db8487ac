package extract

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// chain builds the archive of the symlink-chain escape: d/d/.../d/up resolves to the
// version root through depth levels of "..", and the weights file is a link that goes
// through up and then one level further than the depth, out of the version directory.
func chain(depth int, escapeTo string) []ent {
	ents := model("")
	ents = ents[:len(ents)-3] // drop the weights file and the assets: the links replace them
	dirs := strings.Repeat("d/", depth)
	ents = append(ents, dir(dirs))
	ents = append(ents, ent{name: dirs + "up", typ: tar.TypeSymlink, link: strings.TrimSuffix(strings.Repeat("../", depth), "/")})
	ents = append(ents, ent{name: "variables/variables.data-00000-of-00001", typ: tar.TypeSymlink,
		link: "../" + dirs + "up/" + strings.Repeat("../", depth+1) + escapeTo})
	return ents
}

// checkContained fails the test if any path under dst resolves outside it: by the
// kernel's resolution (EvalSymlinks), and, for every symlink, by a step-by-step walk of
// the real filesystem that catches a step out even when what lies outside does not
// exist.
func checkContained(t testing.TB, dst string) {
	t.Helper()
	root, err := filepath.EvalSymlinks(dst)
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if r, err := filepath.EvalSymlinks(p); err == nil && r != root && !strings.HasPrefix(r, root+string(filepath.Separator)) {
			t.Errorf("%s resolves to %s, outside %s", p, r, root)
		}
		if d.Type()&fs.ModeSymlink != 0 {
			if target, _ := os.Readlink(p); walkEscapes(root, filepath.Dir(p), target) {
				t.Errorf("symlink %s -> %s steps outside %s", p, target, root)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// walkEscapes follows target from the real directory dir, one component at a time
// through the real filesystem, and reports whether any step leaves root.
func walkEscapes(root, dir, target string) bool {
	if filepath.IsAbs(target) {
		return true
	}
	cur, todo, hops := dir, strings.Split(target, "/"), 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if cur == root {
				return true
			}
			cur = filepath.Dir(cur)
			continue
		}
		p := filepath.Join(cur, c)
		fi, err := os.Lstat(p)
		switch {
		case err != nil:
			return false
		case fi.Mode()&fs.ModeSymlink != 0:
			if hops++; hops > 40 {
				return false
			}
			t, err := os.Readlink(p)
			if err != nil {
				return false
			}
			if filepath.IsAbs(t) {
				return true
			}
			todo = append(strings.Split(t, "/"), todo...)
		case fi.IsDir():
			cur = p
		default:
			return false
		}
	}
	return false
}

func TestSymlinkChainEscape(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ents     []ent
		wantFrag string
	}{
		{"etc-passwd-depth-3", chain(3, "etc/passwd"), "outside the version directory"},
		{"etc-passwd-depth-1", chain(1, "etc/passwd"), "outside the version directory"},
		// One level out is the model directory: other versions and their markers.
		{"model-dir", func() []ent {
			e := model("")
			return append(e, dir("d/"), ent{name: "d/up", typ: tar.TypeSymlink, link: ".."},
				ent{name: "peek", typ: tar.TypeSymlink, link: "d/up/.."})
		}(), "outside the version directory"},
		// The link is written first; the symlink it passes through comes later.
		{"link-before-its-path", func() []ent {
			e := model("")
			return append(e, ent{name: "x", typ: tar.TypeSymlink, link: "d/up/../../etc"},
				dir("d/"), ent{name: "d/up", typ: tar.TypeSymlink, link: ".."})
		}(), "outside the version directory"},
		// b is first a missing name (the link looks dangling), then a link to a deep dir.
		{"dotdot-through-later-link", func() []ent {
			e := model("")
			return append(e, ent{name: "x", typ: tar.TypeSymlink, link: "b/../../../etc"},
				dir("p/q/"), ent{name: "b", typ: tar.TypeSymlink, link: "p/q"})
		}(), "outside the version directory"},
		{"loop", func() []ent {
			e := model("")
			return append(e, ent{name: "l1", typ: tar.TypeSymlink, link: "l2"}, ent{name: "l2", typ: tar.TypeSymlink, link: "l1"})
		}(), "levels of symlinks"},
		{"dangling", withGood(ent{name: "gone", typ: tar.TypeSymlink, link: "nothing/here"}), "not in the archive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			top := t.TempDir()
			dst := filepath.Join(top, "7")
			if err := os.Mkdir(dst, 0o755); err != nil {
				t.Fatal(err)
			}
			_, err := Extract(context.Background(), bytes.NewReader(buildTarGz(t, tc.ents)), dst, Options{})
			if !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), tc.wantFrag) {
				t.Fatalf("Extract = %v, want ErrUnsafe mentioning %q", err, tc.wantFrag)
			}
			checkContained(t, dst)
			// No symlink is left on disk from a rejected archive.
			filepath.WalkDir(dst, func(p string, d fs.DirEntry, _ error) error {
				if d != nil && d.Type()&fs.ModeSymlink != 0 {
					t.Errorf("symlink %s written for a rejected archive", p)
				}
				return nil
			})
		})
	}
}

func TestSymlinksInsideAllowed(t *testing.T) {
	ents := withGood(
		dir("d/e/"),
		ent{name: "d/e/up", typ: tar.TypeSymlink, link: "../.."}, // the root: allowed
		ent{name: "w", typ: tar.TypeSymlink, link: "d/e/up/variables/variables.index"},
		ent{name: "fwd", typ: tar.TypeSymlink, link: "later.txt"}, // a target that comes later
		file("later.txt", "x"),
		ent{name: "tolink", typ: tar.TypeSymlink, link: "w"}, // link to a link
		ent{name: "todir", typ: tar.TypeSymlink, link: "assets"},
	)
	dst := t.TempDir()
	if _, err := Extract(context.Background(), bytes.NewReader(buildTarGz(t, ents)), dst, Options{}); err != nil {
		t.Fatalf("Extract = %v, want success", err)
	}
	checkContained(t, dst)
	for name, want := range map[string]string{"tolink": "index", "fwd": "x", "todir/vocab.txt": "a\nb\n"} {
		b, err := os.ReadFile(filepath.Join(dst, name))
		if err != nil || string(b) != want {
			t.Errorf("read %s = %q, %v; want %q", name, b, err, want)
		}
	}
}

// TestLongNames: names and targets a filesystem refuses are rejected as the archive's
// fault (ErrLimit) before anything is written, never as a retryable error.
func TestLongNames(t *testing.T) {
	long := strings.Repeat("n", 300)
	for _, tc := range []struct {
		name string
		ents []ent
	}{
		{"component", withGood(file("assets/"+long, "x"))},
		{"dir-component", withGood(dir(long + "/"))},
		{"link-target", withGood(ent{name: "l", typ: tar.TypeSymlink, link: strings.Repeat("a/", 2048) + "x"})},
		{"link-target-component", withGood(ent{name: "l", typ: tar.TypeSymlink, link: long})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Extract(context.Background(), bytes.NewReader(buildTarGz(t, tc.ents)), t.TempDir(), Options{})
			if !errors.Is(err, ErrLimit) {
				t.Fatalf("Extract = %v, want ErrLimit", err)
			}
		})
	}
}

func TestFsErrorClassifies(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&fs.PathError{Op: "openat", Path: "x", Err: syscall.ENAMETOOLONG}, true},
		{&fs.PathError{Op: "openat", Path: "x", Err: fs.ErrPermission}, false},
	} {
		if got := errors.Is(fsError("create", "x", tc.err), ErrRefused); got != tc.want {
			t.Errorf("fsError(%v) is ErrRefused = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// genArchive draws a random archive of directories, files, symlinks and hard links over
// a small alphabet of names, so that chains, links to links, links to directories and
// links created before what they traverse all occur.
func genArchive(r *rand.Rand) []ent {
	names := []string{"a", "b", "up", "a/b", "a/up", "b/a", "a/b/up", "b/up"}
	comps := []string{"..", "..", "..", "a", "b", "up", ".", "etc"}
	ents := []ent{file("saved_model.pb", "g")}
	for range 2 + r.IntN(12) {
		name := names[r.IntN(len(names))]
		switch r.IntN(5) {
		case 0:
			ents = append(ents, dir(name+"/"))
		case 1:
			ents = append(ents, file(name, "x"))
		case 2:
			ents = append(ents, ent{name: name, typ: tar.TypeLink, link: names[r.IntN(len(names))]})
		default:
			n := 1 + r.IntN(5)
			parts := make([]string, n)
			for i := range parts {
				parts[i] = comps[r.IntN(len(comps))]
			}
			ents = append(ents, ent{name: name, typ: tar.TypeSymlink, link: strings.Join(parts, "/")})
		}
	}
	return ents
}

// extractContained extracts data under a fresh top/v and checks that nothing under v
// resolves outside it, whether the extraction succeeded or not, and that every error
// wraps a sentinel.
func extractContained(t *testing.T, data []byte, opts Options) error {
	t.Helper()
	top := t.TempDir()
	dst := filepath.Join(top, "v")
	if err := os.Mkdir(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := Extract(context.Background(), bytes.NewReader(data), dst, opts)
	onlyUnder(t, top, "v")
	checkContained(t, dst)
	if err != nil && !errors.Is(err, ErrUnsafe) && !errors.Is(err, ErrLimit) && !errors.Is(err, ErrCorrupt) &&
		!errors.Is(err, ErrEmpty) && !errors.Is(err, ErrRefused) {
		t.Fatalf("Extract error %v wraps no sentinel", err)
	}
	return err
}

func TestPropertyNoPathResolvesOutside(t *testing.T) {
	n := 1500
	if testing.Short() {
		n = 300
	}
	ok, rejected := 0, 0
	for seed := range uint64(n) {
		r := rand.New(rand.NewPCG(seed, 21))
		ents := genArchive(r)
		err := extractContained(t, buildTarGz(t, ents), Options{})
		if t.Failed() {
			t.Fatalf("seed %d: archive %+v", seed, ents)
		}
		if err == nil {
			ok++
		} else {
			rejected++
		}
	}
	t.Logf("%d random archives: %d extracted, %d rejected", n, ok, rejected)
	if ok == 0 || rejected == 0 {
		t.Errorf("the generator should produce both kinds: %d extracted, %d rejected", ok, rejected)
	}
}

// FuzzLinks fuzzes link resolution: the input is a list of entries, one per line,
// "<kind> <name> [<target>]" with kind d (directory), f (file), s (symlink) or h (hard
// link).
func FuzzLinks(f *testing.F) {
	f.Add("f saved_model.pb\nd d/d\ns d/d/up ../..\ns w ../d/d/up/../../../etc/passwd\n")
	f.Add("f saved_model.pb\ns x b/../../etc\nd p/q\ns b p/q\n")
	f.Add("f saved_model.pb\ns a b\ns b a\nh c saved_model.pb\n")
	f.Fuzz(func(t *testing.T, spec string) {
		ents := []ent{}
		for i, line := range strings.Split(spec, "\n") {
			if i >= 32 {
				break
			}
			fields := strings.Fields(line)
			if len(fields) < 2 {
				continue
			}
			e := ent{name: fields[1]}
			if len(fields) > 2 {
				e.link = fields[2]
			}
			switch fields[0] {
			case "d":
				e.typ = tar.TypeDir
			case "f":
				e.typ, e.body = tar.TypeReg, "x"
			case "s":
				e.typ = tar.TypeSymlink
			case "h":
				e.typ = tar.TypeLink
			default:
				continue
			}
			ents = append(ents, e)
		}
		var buf bytes.Buffer
		if !writeTarGz(&buf, ents) {
			return
		}
		extractContained(t, buf.Bytes(), Options{Limits: Limits{MaxEntries: 64}})
	})
}
