# nannyagent — see README.md. Every target runs from a clean checkout with
# only Go and the tools .ci/run installs.

SHELL     := /bin/bash
GO        ?= go
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
BIN       := bin
BUF       := $(GO) run github.com/bufbuild/buf/cmd/buf@v1.75.0
STATICCHECK := $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: build test generate lint bench demo fuzz tools nspawn-test

# Static binaries (CGO_ENABLED=0): accounts are static (sysusers.d), so the
# pure-Go /etc/passwd lookup suffices, and no libc is mapped.
build:
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/nannyagent ./cmd/nannyagent-broker ./cmd/nannyagent-worker

# The README's test command: static checks, then every test with the race
# detector. Tests that need root skip with a printed reason without it.
test: lint
	$(GO) test -race -count=1 -timeout 20m $$($(GO) list ./... | grep -v /test/policycorpus)
	@# The corpora's counts are part of the result: show them.
	set -o pipefail; $(GO) test -race -count=1 -timeout 10m -v ./test/policycorpus/ | grep -E '^(ok|FAIL|--- FAIL|panic)|corpus: |^  denied |^    reason: ' 

# The booted-systemd tests (test/nspawn, test/units), as root: the units,
# sysusers.d and tmpfiles.d installed in a Debian system booted with
# systemd-nspawn. The first run builds the Debian base with debootstrap
# (a few minutes; cached in /var/cache/nannyagent-test).
nspawn-test:
	NANNYAGENT_NSPAWN=1 $(GO) test -count=1 -timeout 20m -v ./test/nspawn/ ./test/units/

generate:
	$(BUF) generate

# buf lint, generated code that matches the .proto files, gofmt, vet and
# staticcheck.
lint:
	$(BUF) lint
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	  $(BUF) generate -o $$tmp && \
	  for f in $$(cd $$tmp && find . -name '*.pb.go'); do \
	    cmp -s $$tmp/$$f $$f || { echo "stale generated code: $$f (run make generate)"; exit 1; }; \
	  done
	@out=$$(gofmt -l $$(git ls-files '*.go')); [ -z "$$out" ] || { echo "gofmt needed:"; echo "$$out"; exit 1; }
	$(GO) vet ./...
	$(STATICCHECK) ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem -count=1 -timeout 20m ./...

# Run every fuzz target briefly (FUZZTIME per target).
FUZZTIME ?= 15s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

# A real problem in a temporary directory, a diagnosis with a denied
# command and a trace, and the broker's decisions, on the built binaries.
demo: build
	$(GO) run ./test/cmd/demo -bin $(BIN)

# Build the pinned tools once (buf takes minutes cold); later runs hit the
# Go build cache.
tools:
	$(BUF) --version
	$(STATICCHECK) -version
