# tfgate. `make demo` runs the whole stack on loopback; `make test` runs the tests.
SHELL := /bin/bash
export TFGATE_CACHE ?= $(HOME)/.cache/tfgate
TOOLS_BIN := $(TFGATE_CACHE)/bin
export PATH := $(TOOLS_BIN):$(PATH)
GO ?= go
BINARIES := gateway modelsync loadtest servingsim

.PHONY: all build test vet lint rules proto protocheck tidycheck tools demo up down bench bench-modelsync fuzz clean fmt

all: build

## build: compile the binaries into bin/
build:
	@mkdir -p bin
	$(GO) build -o bin/ $(addprefix ./cmd/,$(BINARIES))

## tools: install the pinned tools (protoc, plugins, buf, consul, fauxqs, chromium) into $(TFGATE_CACHE)
tools:
	@scripts/tools.sh

## proto: regenerate the committed Go code from proto/
proto:
	@scripts/tools.sh protoc protoc-gen
	scripts/protogen.sh

protocheck:
	@scripts/protocheck.sh

## tidycheck: fail when `go mod tidy` would change go.mod or go.sum (it prints the diff)
tidycheck:
	@$(GO) mod tidy -diff || { echo "tidycheck: go.mod/go.sum are not tidy; run 'go mod tidy' and commit both" >&2; exit 1; }

lint:
	@scripts/tools.sh buf
	buf lint
	@bad=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); if [ -n "$$bad" ]; then echo "gofmt needed: $$bad"; exit 1; fi

vet:
	$(GO) vet ./...

## rules: promtool check and unit-test the Prometheus rules in deploy/prometheus/
rules:
	@scripts/tools.sh prometheus
	promtool check rules deploy/prometheus/*.rules.yml deploy/prometheus/*.alerts.yml
	cd deploy/prometheus/tests && promtool test rules *.yml

## test: vet, lint, proto and go.mod checks, the Prometheus rule tests, every test with -race; ends with a count of skipped tests
test: tools vet lint protocheck tidycheck rules
	GO=$(GO) scripts/gotest.sh -race -count=1 -timeout 30m ./...

## demo: the whole stack on loopback, with a report
demo: tools build
	scripts/demo.sh

## up: the demo's stack, left running (ports and ready-to-paste grpcurl / loadtest commands printed); make down stops it
up: tools build
	DEMO_MODE=up scripts/demo.sh

## down: stop what make up started
down:
	@scripts/down.sh

## bench: the performance suite on loopback (about 12 minutes, 7 of them the fleet scenario); results in bench/results/
bench: tools build
	scripts/bench.sh

## bench-modelsync: extraction throughput vs tar -xzf, peak RSS, drain rate (SIZE_MB=1024 for the 1 GB run)
bench-modelsync: tools
	scripts/bench-modelsync.sh $(or $(SIZE_MB),256)

## fuzz: run every native fuzzer for FUZZTIME each (default 10s)
FUZZTIME ?= 10s
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

fmt:
	gofmt -w $$(git ls-files '*.go' | grep -v '\.pb\.go$$')

clean:
	rm -rf bin .demo
