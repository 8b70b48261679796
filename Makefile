# rotatord — common tasks. `make demo` and `make test` are the two commands
# the README gives a newcomer.
GO        ?= go
BIN       := bin
VAULT_BIN := $(BIN)/vault
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
# Vault tests find the binary here; they skip locally (and fail under CI=true)
# when it is missing.
export ROTATORD_VAULT_BIN ?= $(abspath $(VAULT_BIN))

.PHONY: all build test test-race test-short lint vet vault demo bench bench-rotations soak clean

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/rotatord ./cmd/rotatord
	$(GO) build -o $(BIN)/fakecloud ./cmd/fakecloud

# The test command of README.md and CI: the Vault binary first (built once),
# then every test with the race detector.
test: vault
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 30m ./...

test-race: test

test-short:
	$(GO) test -short -count=1 ./...

vet:
	$(GO) vet ./...

# staticcheck lives in its own module (tools/lint) so the main go.mod stays
# lean; it is built from there and run over this module.
lint: vet $(BIN)/staticcheck
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(BIN)/staticcheck ./...

$(BIN)/staticcheck: tools/lint/go.mod
	cd tools/lint && $(GO) build -o ../../$(BIN)/staticcheck honnef.co/go/tools/cmd/staticcheck

# Vault v1.21.1 built from the Go module proxy (tools/vault pins it). Only
# when missing: a cold build takes about 30 minutes on 2 cores.
vault: $(VAULT_BIN)

$(VAULT_BIN):
	@mkdir -p $(BIN)
	@echo "building Vault v1.21.1 into $(VAULT_BIN) (cold: ~30 min on 2 cores; once only)"
	cd tools/vault && $(GO) build -trimpath -ldflags='-s -w' -o ../../$(VAULT_BIN) github.com/hashicorp/vault

demo: build
	./scripts/demo.sh

# Every benchmark, each printing its figures (none asserts a time).
bench: vault
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 1x ./cmd/... ./bench/...
	$(GO) test -run '^$$' -bench . -benchmem ./internal/...

# 1,000 policies against fakecloud (20 ms per call) vs the critical-path
# bound, and vs the hand-written script (bench/manual-rotate.sh).
bench-rotations: vault
	$(GO) test -run '^$$' -bench Rotations -benchtime 1x ./bench/

# 500 policies through provider faults and two SIGKILLs; `make test` runs a
# 40-policy version.
soak: vault
	ROTATORD_SOAK_POLICIES=500 $(GO) test -count=1 -timeout 30m -run TestSoak -v ./bench/

clean:
	rm -rf $(BIN)/rotatord $(BIN)/fakecloud
