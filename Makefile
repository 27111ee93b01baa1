# nannyagent — see README.md. Every target runs from a clean checkout with
# only Go and the tools .ci/run installs.

SHELL     := /bin/bash
GO        ?= go
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
BIN       := bin
BUF       := $(GO) run github.com/bufbuild/buf/cmd/buf@v1.75.0
STATICCHECK := $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: build test generate lint bench demo footprint fuzz tools nspawn-test package package-check

# Static binaries (CGO_ENABLED=0): accounts are static (sysusers.d), so the
# pure-Go /etc/passwd lookup suffices, and no libc is mapped.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/nannyagent ./cmd/nannyagent-broker ./cmd/nannyagent-worker

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
	NANNYAGENT_NSPAWN=1 $(GO) test -count=1 -timeout 20m -v ./test/nspawn/ ./test/units/ ./test/packages/

generate:
	$(BUF) generate

# .deb and .rpm for each architecture in dist/ (packaging/nfpm.yaml). The
# version is the git tag on HEAD (v1.2.3 gives 1.2.3), else the VERSION file.
# Each architecture is staged in a temporary directory (nfpm.yaml's
# build/pkg/, rewritten, so two builds never share it): static binaries,
# man pages and the Debian changelog compressed as Debian wants (gzip -9n).
NFPM      := $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.48.0
PKG_VERSION ?= $(shell t=$$(git describe --tags --exact-match --match 'v[0-9]*' 2>/dev/null) && echo $${t\#v} || cat VERSION)
PKG_ARCHES  ?= amd64 arm64
PKG_FORMATS ?= deb rpm
DIST      ?= dist
package:
	@set -e; mkdir -p $(DIST); stage=$$(mktemp -d); trap 'rm -rf "$$stage"' EXIT; \
	sed "s#build/pkg/#$$stage/#" packaging/nfpm.yaml >$$stage/nfpm.yaml; \
	for m in packaging/man/*.[18]; do gzip -9n <$$m >$$stage/$$(basename $$m).gz; done; \
	gzip -9n <packaging/debian/changelog >$$stage/changelog.gz; \
	for arch in $(PKG_ARCHES); do \
	  CGO_ENABLED=0 GOARCH=$$arch $(GO) build -trimpath -ldflags "-s -w -X main.version=$(PKG_VERSION)" \
	    -o $$stage/ ./cmd/nannyagent ./cmd/nannyagent-broker ./cmd/nannyagent-worker; \
	  for fmt in $(PKG_FORMATS); do \
	    NANNYAGENT_ARCH=$$arch NANNYAGENT_VERSION=$(PKG_VERSION) \
	      $(NFPM) package --config $$stage/nfpm.yaml --packager $$fmt --target $(DIST)/; \
	  done; \
	done

# The packages as a reviewer checks them: lintian on the amd64 .deb (no
# error, no warning; overrides in packaging/debian/lintian-overrides), the
# .rpm's files and scriptlets. Installing them is test/packages' job.
package-check: package
	lintian --fail-on error,warning -EI $(DIST)/nannyagent_$(PKG_VERSION)_amd64.deb
	rpm -qpl $(DIST)/nannyagent-$(PKG_VERSION)-1.x86_64.rpm
	rpm -qp --scripts $(DIST)/nannyagent-$(PKG_VERSION)-1.x86_64.rpm

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

# What the agent costs a host at rest, as root: the stack against the fake
# NannyAPI (broker socket-activated, worker as daemon) after one diagnosis,
# VmRSS, RssAnon and CPU per process, CPU from a cgroup holding them all.
# FOOTPRINT_CPU_WINDOW=1m for a quicker, rougher CPU figure;
# FOOTPRINT_ARGS=-lifetime=resident for a resident broker.
FOOTPRINT_CPU_WINDOW ?= 10m
footprint: build
	$(GO) run ./test/cmd/footprint -bin $(BIN) -cpu-window $(FOOTPRINT_CPU_WINDOW) $(FOOTPRINT_ARGS)

# Build the pinned tools once (buf takes minutes cold); later runs hit the
# Go build cache.
tools:
	$(BUF) --version
	$(STATICCHECK) -version
