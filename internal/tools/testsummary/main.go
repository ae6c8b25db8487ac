// Command testsummary reads `go test -json` on standard input and writes what
// `go test` without -v would have shown: build errors and, as one block when each
// package ends, its result line with the output of every failed test (or of
// every unfinished test when the package fails, as on a -timeout panic),
// dropping the output of tests that passed. It ends with one line counting the tests and subtests that skipped, grouped by
// the tool whose absence skipped them (testenv.RequireTool's message):
//
//	skipped 31 tests: 24 without consul, 7 without fauxqs (scripts/tools.sh installs them)
//
// Lines that are not JSON events are copied through. It never decides pass or
// fail: scripts/gotest.sh exits with go test's status.
package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
		os.Exit(1)
	}
}

// event is the part of test2json's TestEvent this command reads.
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

type testKey struct{ pkg, test string }

// summary tracks the running tests' output and the skips seen so far.
type summary struct {
	w       io.Writer
	running map[testKey][]string // output of tests that have not ended
	shown   map[string][]string  // per package, tests' output to show when it ends
	pkgOut  map[string][]string  // per package, its own output ("FAIL", "ok  pkg 1.2s")
	skips   []skip
	failed  bool // a package failed, or did not build
}

type skip struct {
	key    testKey
	reason string
}

func run(r io.Reader, w io.Writer) error {
	s := &summary{w: w, running: map[testKey][]string{}, shown: map[string][]string{}, pkgOut: map[string][]string{}}
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			if werr := s.line(line); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	// The stream ended with tests still running (go test was killed): show them.
	for _, k := range sortedKeys(s.running) {
		s.show(k)
	}
	pkgs := map[string]bool{}
	for p := range s.shown {
		pkgs[p] = true
	}
	for p := range s.pkgOut {
		pkgs[p] = true
	}
	for _, pkg := range slices.Sorted(maps.Keys(pkgs)) {
		if err := s.end(pkg); err != nil {
			return err
		}
	}
	if s.failed { // go test's last line when something failed; -json leaves it out
		if _, err := io.WriteString(w, "FAIL\n"); err != nil {
			return err
		}
	}
	_, err := fmt.Fprintln(w, s.skipLine())
	return err
}

func (s *summary) line(line string) error {
	var e event
	if !strings.HasPrefix(line, "{") || json.Unmarshal([]byte(line), &e) != nil || e.Action == "" {
		_, err := io.WriteString(s.w, withNewline(line)) // not an event: pass it on
		return err
	}
	k := testKey{e.Package, e.Test}
	switch {
	case e.Action == "build-output":
		_, err := io.WriteString(s.w, e.Output)
		return err
	case e.Action == "output" && e.Test == "":
		if e.Output != "PASS\n" { // go test without -v does not show it
			s.pkgOut[e.Package] = append(s.pkgOut[e.Package], e.Output)
		}
	case e.Action == "output":
		if !isFrame(e.Output) {
			s.running[k] = append(s.running[k], e.Output)
		}
	case e.Action == "build-fail":
		s.failed = true
	case e.Test == "" && e.Package != "":
		s.failed = s.failed || e.Action == "fail"
		// The package ended. When it failed, so did (or never ended) its tests.
		for _, rk := range sortedKeys(s.running) {
			if rk.pkg != e.Package {
				continue
			}
			if e.Action == "fail" {
				s.show(rk)
			}
			delete(s.running, rk)
		}
		return s.end(e.Package)
	case e.Action == "fail" || e.Action == "bench":
		s.show(k)
	case e.Action == "skip":
		s.skips = append(s.skips, skip{k, skipReason(s.running[k])})
		delete(s.running, k)
	case e.Action == "pass":
		delete(s.running, k)
	}
	return nil
}

// isFrame reports the lines that only -v shows: go test -json runs tests verbosely.
func isFrame(out string) bool {
	for _, p := range []string{"=== RUN ", "=== PAUSE ", "=== CONT ", "=== NAME "} {
		if strings.HasPrefix(out, p) {
			return true
		}
	}
	return false
}

// show moves a test's output to its package's block.
func (s *summary) show(k testKey) {
	s.shown[k.pkg] = append(s.shown[k.pkg], s.running[k]...)
	delete(s.running, k)
}

// end writes a package's block: the output of its failed (or unfinished) tests,
// then its own, which ends with its result line.
func (s *summary) end(pkg string) error {
	out := append(s.shown[pkg], s.pkgOut[pkg]...)
	delete(s.shown, pkg)
	delete(s.pkgOut, pkg)
	_, err := io.WriteString(s.w, strings.Join(out, ""))
	return err
}

// skipReason is the message of t.Skip: the last output line of the test other
// than the testing package's own "--- SKIP", without its "file_test.go:12: "
// prefix.
func skipReason(out []string) string {
	for _, o := range slices.Backward(out) {
		l := strings.TrimSpace(o)
		if l == "" || strings.HasPrefix(l, "--- ") {
			continue
		}
		return fileLine.ReplaceAllString(l, "")
	}
	return "no reason given"
}

var (
	fileLine = regexp.MustCompile(`^[\w.-]+\.go:\d+: `)
	// testenv.RequireTool: "skipping: tool not installed: PATH (run scripts/tools.sh)".
	toolMissing = regexp.MustCompile(`tool not installed: (\S+)(?: \(run ([^)]+)\))?`)
)

// toolOf names the tool a skip reason says is missing: the package directory
// under node_modules, else the file name; install is how to get it.
func toolOf(reason string) (tool, install string, ok bool) {
	m := toolMissing.FindStringSubmatch(reason)
	if m == nil {
		return "", "", false
	}
	parts := strings.Split(m[1], "/")
	tool = parts[len(parts)-1]
	if i := slices.Index(parts, "node_modules"); i >= 0 && i+1 < len(parts) {
		tool = parts[i+1]
	}
	return tool, m[2], true
}

// skipLine is the one-line account of the skips.
func (s *summary) skipLine() string {
	if len(s.skips) == 0 {
		return "skipped 0 tests"
	}
	type group struct {
		what string
		n    int
	}
	var tools, others []*group
	find := func(gs *[]*group, what string) *group {
		for _, g := range *gs {
			if g.what == what {
				return g
			}
		}
		g := &group{what: what}
		*gs = append(*gs, g)
		return g
	}
	var installs []string
	for _, sk := range s.skips {
		if tool, install, ok := toolOf(sk.reason); ok {
			find(&tools, tool).n++
			if install != "" && !slices.Contains(installs, install) {
				installs = append(installs, install)
			}
			continue
		}
		find(&others, sk.reason).n++
	}
	byCount := func(a, b *group) int { return cmp.Or(b.n-a.n, strings.Compare(a.what, b.what)) }
	slices.SortFunc(tools, byCount)
	slices.SortFunc(others, byCount)
	var parts []string
	for _, g := range tools {
		parts = append(parts, fmt.Sprintf("%d without %s", g.n, g.what))
	}
	line := strings.Join(parts, ", ")
	if len(installs) > 0 {
		line += fmt.Sprintf(" (%s installs them)", strings.Join(installs, ", "))
	}
	parts = parts[:0]
	n := 0
	for _, g := range others {
		n += g.n
		if g.n == 1 {
			parts = append(parts, strconv.Quote(g.what))
		} else {
			parts = append(parts, fmt.Sprintf("%q (%d)", g.what, g.n))
		}
	}
	if n > 0 {
		if line != "" {
			line += "; "
		}
		line += fmt.Sprintf("%d other: %s", n, strings.Join(parts, ", "))
	}
	return fmt.Sprintf("skipped %d %s: %s", len(s.skips), plural(len(s.skips), "test"), line)
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

func withNewline(s string) string {
	if strings.HasSuffix(s, "\n") {
		return s
	}
	return s + "\n"
}

func sortedKeys(m map[testKey][]string) []testKey {
	keys := make([]testKey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b testKey) int { return cmp.Or(strings.Compare(a.pkg, b.pkg), strings.Compare(a.test, b.test)) })
	return keys
}
