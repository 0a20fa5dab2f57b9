# Krill — the two set-up commands are `make run` and `make test`.
GO          ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME    ?= 5m
BIN         := bin/krill

# No cgo anywhere: static binaries, and one build cache for build, vet and test.
export CGO_ENABLED = 0

.PHONY: build run test race bench bench-idle fuzz lint clean

## build: a static binary (no cgo) in bin/krill
build:
	$(GO) build -trimpath -o $(BIN) ./cmd/krill

## image: the container image as an OCI layout tarball, bin/krill-image.tar, built without a
## container engine or registry (packaging/README.md; load with podman load -i / docker load -i)
IMAGE_TAG         ?= krill:latest
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null)
.PHONY: image
image:
	SOURCE_DATE_EPOCH='$(SOURCE_DATE_EPOCH)' $(GO) run ./packaging/image -o bin/krill-image.tar -tag '$(IMAGE_TAG)' \
	  -version "$$(git describe --tags --always --dirty 2>/dev/null)" -revision "$$(git rev-parse HEAD 2>/dev/null)"

## run: build bin/krill, then the server on its embedded defaults (localhost, ./krill-data).
## exec: the server replaces the shell, so make's one child is the server and a SIGTERM to
## make (which make passes on to its child) stops it; `bin/krill user add ...` then reuses
## the same build.
run: build
	exec $(BIN) serve

## test: formatting, vet and every test, integration tests included
test:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) test -count=1 ./...

## interop: the built server against XMPP clients nobody here wrote (go-sendxmpp, slixmpp,
## xmpp.js, xmppc) and `make run` stopped by one SIGTERM, and federation with Debian's Prosody;
## .ci/run installs the clients
## (interop/README.md). Under CI=true a missing client fails; elsewhere it is skipped.
.PHONY: interop
interop: build
	KRILL_INTEROP=1 KRILL_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -v -timeout 10m ./interop/
	KRILL_INTEROP=1 $(GO) test -count=1 -v -timeout 5m -run 'TestProsodyInterop' ./server/

## test-postgres: the storage suite against a local PostgreSQL (TEST_POSTGRES_DSN; storage/README.md)
TEST_POSTGRES_DSN ?= postgres://krill_test:krill_test@127.0.0.1:5432/krill_test?sslmode=disable
.PHONY: test-postgres
test-postgres:
	CI=true TEST_POSTGRES_DSN='$(TEST_POSTGRES_DSN)' $(GO) test -count=1 -run 'Postgres|Open' ./storage/

## race: the tests under the race detector (needs cgo, tests only)
race:
	CGO_ENABLED=1 $(GO) test -race -count=1 ./...

## bench: micro-benchmarks, then the Krill-only quick suite of bench/cmd/krill-bench
## (idle stages at N=2000, login rate, throughput, pre-auth attack; a few minutes)
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./timerwheel/ ./stanza/ ./sasl/ ./workpool/
	QUICK=1 bash bench/scripts/compare.sh

## bench-compare: Krill, Prosody and ejabberd side by side (as root; installs the
## Debian packages; results in bench/results/DATE-MACHINE; see bench/README.md)
.PHONY: bench-compare
bench-compare:
	bash bench/scripts/compare.sh

## bench-idle: user-space bytes per idle connection at N=10,000
bench-idle:
	$(GO) test -run '^$$' -bench BenchmarkIdle -benchtime 1x -timeout 30m ./bench/

## fuzz: each fuzz target for FUZZTIME
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzFramer$$' -fuzztime $(FUZZTIME) ./stanza/
	$(GO) test -run '^$$' -fuzz '^FuzzScramServer$$' -fuzztime $(FUZZTIME) ./sasl/
	$(GO) test -run '^$$' -fuzz '^FuzzTLS13Records$$' -fuzztime $(FUZZTIME) ./server/

## lint: gofmt, go vet, staticcheck, go mod tidy
lint:
	@test -z "$$(gofmt -l .)" || { gofmt -l .; exit 1; }
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	$(GO) mod tidy -diff

clean:
	rm -rf bin
