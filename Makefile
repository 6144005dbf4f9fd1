# canarygate — see README.md. Every target installs what it needs; nothing but Go and Debian packages is assumed.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c

CACHE ?= $(or $(CANARYGATE_CACHE),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/canarygate)
export CANARYGATE_CACHE := $(CACHE)
CONTROLLER_TOOLS_VERSION := v0.23.0
STATICCHECK_VERSION := v0.8.2
CONTROLLER_GEN := $(CACHE)/tools/controller-tools-$(CONTROLLER_TOOLS_VERSION)/controller-gen
STATICCHECK := $(CACHE)/tools/staticcheck-$(STATICCHECK_VERSION)/staticcheck
BIN := bin
TESTBED_DIR ?= $(CACHE)/testbed-$(shell pwd | sha1sum | cut -c1-8)

.PHONY: all build test unit-test e2e-test demo manifests generate verify-generated lint testbed-up testbed-down tools bins run-local docker-build bench

all: build

build:
	go build -o $(BIN)/ ./cmd/...

$(CONTROLLER_GEN):
	GOBIN=$(dir $@) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)

$(STATICCHECK):
	GOBIN=$(dir $@) go install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

generate: $(CONTROLLER_GEN)
	$(CONTROLLER_GEN) object paths=./api/...

manifests: $(CONTROLLER_GEN)
	$(CONTROLLER_GEN) crd:allowDangerousTypes=true paths=./api/... output:crd:artifacts:config=manifests/crd/bases
	$(CONTROLLER_GEN) rbac:roleName=canarygate paths=./... output:rbac:artifacts:config=manifests/rbac
	$(CONTROLLER_GEN) webhook paths=./... output:webhook:artifacts:config=manifests/webhook

# Fails when the committed generated code or manifests differ from what the markers produce.
verify-generated: generate manifests
	@if [ -n "$$(git status --porcelain -- api manifests)" ]; then git status --short -- api manifests; git diff -- api manifests | head -50; echo "generated files are stale: run 'make generate manifests' and commit" >&2; exit 1; fi

lint: $(STATICCHECK)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...
	$(STATICCHECK) ./...

# Builds the pinned Kubernetes, etcd and kwok binaries into $(CACHE), once per machine and version.
bins:
	@bash hack/testbed-bins.sh >/dev/null

unit-test:
	go test -count=1 $$(go list ./... | grep -v /e2e)

# Everything CI runs: generated-file check, lint, unit, integration and end-to-end tests on the test bed.
test: verify-generated lint bins
	bash hack/test.sh

testbed-up: bins build
	@go run ./e2e/cmd/testbed up --dir $(TESTBED_DIR)

# What run-local started stops first, so canarygate never outlives its API server.
testbed-down:
	@go run ./e2e/cmd/runlocal down --dir $(TESTBED_DIR)
	@go run ./e2e/cmd/testbed down --dir $(TESTBED_DIR)

# canarygate (built from this checkout, run under its ServiceAccount, webhooks registered by URL) and
# the traffic simulator, in the background against the bed of `make testbed-up`; prints where
# everything is. `make testbed-down` stops it all.
run-local:
	@go run ./e2e/cmd/runlocal up --dir $(TESTBED_DIR)

# The first thing a new user runs: see README.md, "The demo". SCENARIO=fail shows a rollback.
SCENARIO ?= success
demo:
	@SCENARIO=$(SCENARIO) bash hack/demo.sh

# The container image (Dockerfile: static binary on distroless, non-root). Needs docker or podman
# with BuildKit; set IMG to the image to build, then use it from a kustomize overlay (README, Install).
IMG ?= canarygate:latest
CONTAINER_TOOL ?= docker
docker-build:
	$(CONTAINER_TOOL) build -t $(IMG) .

# Regenerates BENCHMARKS.md: admission benchmarks and load against the floor, N canaries rolled out
# at once, idle cost of 10,000 managed Deployments. Knobs: see hack/bench.sh (BENCH_SCALE_N="10 100" ...).
bench: bins build
	bash hack/bench.sh
