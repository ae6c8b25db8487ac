package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// TestGolden: real `go test -json` streams (testdata/*.json, from a scratch
// module with passing, skipping, failing, hanging and unbuildable packages) and
// what testsummary makes of them.
func TestGolden(t *testing.T) {
	ins, err := filepath.Glob("testdata/*.json")
	if err != nil || len(ins) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, in := range ins {
		t.Run(filepath.Base(in), func(t *testing.T) {
			b, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if err := run(bytes.NewReader(b), &out); err != nil {
				t.Fatal(err)
			}
			golden := strings.TrimSuffix(in, ".json") + ".golden"
			if *update {
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if out.String() != string(want) {
				t.Errorf("output for %s:\n%s\nwant (%s):\n%s", in, out.String(), golden, want)
			}
		})
	}
}

func TestRun(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{
			name: "all pass, nothing skipped",
			in: `{"Action":"start","Package":"p"}
{"Action":"run","Package":"p","Test":"TestA"}
{"Action":"output","Package":"p","Test":"TestA","Output":"=== RUN   TestA\n"}
{"Action":"output","Package":"p","Test":"TestA","Output":"    a_test.go:3: chatter\n"}
{"Action":"output","Package":"p","Test":"TestA","Output":"--- PASS: TestA (0.00s)\n"}
{"Action":"pass","Package":"p","Test":"TestA"}
{"Action":"output","Package":"p","Output":"PASS\n"}
{"Action":"output","Package":"p","Output":"ok  \tp\t0.01s\n"}
{"Action":"pass","Package":"p"}
`,
			want: "ok  \tp\t0.01s\nskipped 0 tests\n",
		},
		{
			name: "lines that are not events pass through",
			in:   "go: downloading example.com/m v1.0.0\n{\"Action\":\"skip\",\"Package\":\"q\"}\nnot json {\n",
			want: "go: downloading example.com/m v1.0.0\nnot json {\nskipped 0 tests\n",
		},
		{
			name: "skips grouped by tool, then other reasons",
			in: `{"Action":"output","Package":"p","Test":"TestC1","Output":"    consul.go:60: skipping: tool not installed: /c/bin/consul (run scripts/tools.sh)\n"}
{"Action":"skip","Package":"p","Test":"TestC1"}
{"Action":"output","Package":"p","Test":"TestC2/sub","Output":"        consul.go:60: skipping: tool not installed: /c/bin/consul (run scripts/tools.sh)\n"}
{"Action":"output","Package":"p","Test":"TestC2/sub","Output":"--- SKIP: TestC2/sub (0.00s)\n"}
{"Action":"skip","Package":"p","Test":"TestC2/sub"}
{"Action":"output","Package":"p","Test":"TestF","Output":"    tools.go:60: skipping: tool not installed: /c/fauxqs/node_modules/fauxqs/dist/cli.js (run scripts/tools.sh)\n"}
{"Action":"skip","Package":"p","Test":"TestF"}
{"Action":"output","Package":"p","Test":"TestN","Output":"    sqs.go:72: skipping: node not on PATH\n"}
{"Action":"skip","Package":"p","Test":"TestN"}
{"Action":"output","Package":"p","Test":"TestN2","Output":"    sqs.go:72: skipping: node not on PATH\n"}
{"Action":"skip","Package":"p","Test":"TestN2"}
{"Action":"skip","Package":"p","Test":"TestQuiet"}
{"Action":"output","Package":"p","Output":"ok  \tp\t0.01s\n"}
{"Action":"pass","Package":"p"}
`,
			want: "ok  \tp\t0.01s\n" + `skipped 6 tests: 2 without consul, 1 without fauxqs (scripts/tools.sh installs them); 3 other: "skipping: node not on PATH" (2), "no reason given"` + "\n",
		},
		{
			name: "a stream cut off mid-test shows the test's output",
			in: `{"Action":"run","Package":"p","Test":"TestA"}
{"Action":"output","Package":"p","Test":"TestA","Output":"    a_test.go:3: last words\n"}
`,
			want: "    a_test.go:3: last words\nskipped 0 tests\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := run(strings.NewReader(tc.in), &out); err != nil {
				t.Fatal(err)
			}
			if out.String() != tc.want {
				t.Errorf("run(%q):\n%q\nwant\n%q", tc.in, out.String(), tc.want)
			}
		})
	}
}
