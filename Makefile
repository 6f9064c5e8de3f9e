# ntc: the front door. `make demo` and `make test` install what they need.
GO      ?= go
BIN     := bin/ntc
GOFLAGS ?=

.PHONY: all deps build demo test test-short bench fuzz guest vet clean

all: build

deps:
	./scripts/deps.sh

build:
	$(GO) build $(GOFLAGS) -o $(BIN) ./cmd/ntc

## demo: the main job: a live VM checkpointed, pushed over QUIC and resumed (ntc demo --vm)
demo: deps build
	./$(BIN) demo --vm

## test: vet, then every test with the race detector (QEMU guests included)
test: deps
	$(GO) vet ./...
	$(GO) test -race -timeout 30m ./...

test-short:
	$(GO) test -short ./...

## bench: the numbers the issues ask for, each with its baseline from the same run
## (ntc bench needs root: network namespaces for the emulated links)
bench: deps build
	$(GO) test -run '^$$' -bench . -benchtime 3x ./chunk/ ./sync/ ./transport/
	./$(BIN) bench --link dsl,wan,lan --scenario random-1pct,random-10pct,debian,vm-idle,vm-busy --size 128M --vm-work 60s -o bench/results

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecodeIndex -fuzztime 60s ./chunk/

## guest: build the test guest (Debian cloud kernel + busybox initramfs) into the cache
guest:
	$(GO) run ./internal/testguest/cmd/buildguest

vet:
	$(GO) vet ./...

clean:
	rm -rf bin
