# tokenstore — see README.md. Every target works on a fresh machine of the
# project's kind: tools and envtest binaries are built from the Go module proxy
# into bin/ (and a per-user cache) on first use.
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# Git tags are v0.1.0; the binary, the image's tags and labels and the chart
# carry 0.1.0 (docs/release.md).
override VERSION := $(patsubst v%,%,$(VERSION))
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
# The production binary's linker flags, shared by build, image and release
# (test/image holds the Dockerfile to them): no symbol table or DWARF; the
# version and commit that `tokenstore version` prints.
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
IMAGE_DIR ?= bin/image
RELEASE_DIR ?= bin/release
GO_TEST_FLAGS ?= -count=1 -timeout 30m
BENCH ?= .
BENCH_COUNT ?= 5
FUZZTIME ?= 8s

.PHONY: all
all: build

.PHONY: help
help: ## Show the targets.
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  %-12s %s\n",$$1,$$2}'

.PHONY: tools
tools: ## Build the pinned generators and linters into bin/.
	hack/tools.sh controller-gen sqlc staticcheck

.PHONY: envtest
envtest: ## Build etcd, kube-apiserver and kubectl for envtest into bin/k8s/.
	hack/build-envtest.sh >/dev/null

.PHONY: cluster-up
cluster-up: ## Start a real single-node Kubernetes cluster on this machine (root; docs/cluster.md), then: source hack/cluster/env.sh.
	hack/cluster/up.sh

.PHONY: cluster-down
cluster-down: ## Stop the local cluster and undo all it did to the host (docs/cluster.md).
	hack/cluster/down.sh

.PHONY: generate
generate: ## Generate deepcopy code (controller-gen) and the sqlc query code.
	hack/tools.sh controller-gen sqlc
	hack/generate-k8s.sh
	cd sql && ../bin/sqlc generate

.PHONY: manifests
manifests: ## Generate the CRD and RBAC manifests into config/.
	hack/tools.sh controller-gen
	hack/generate-k8s.sh
	hack/chart-sync-crd.sh
	hack/chart-docs.sh

.PHONY: verify
verify: ## Fail when committed generated code differs from its sources.
	hack/tools.sh controller-gen sqlc helm
	hack/verify-k8s.sh
	hack/verify-sqlc.sh
	hack/verify-chart.sh
	hack/apidocs.sh -check

.PHONY: build
build: ## Build bin/tokenstore, the production binary (static, no dev mode).
	CGO_ENABLED=0 GOFLAGS= go build -trimpath -buildvcs=false -ldflags "$(LDFLAGS)" -o bin/tokenstore ./cmd/tokenstore

.PHONY: dev
dev: ## Run tokenstore dev: API, web page, demo identity provider and SQLite on 127.0.0.1:8080 (built with -tags dev).
	go run -tags dev ./cmd/tokenstore dev

.PHONY: image
image: ## Build the linux/amd64+arm64 image without a daemon: OCI layout IMAGE_DIR/tokenstore (tags VERSION and the chart's appVersion) and its tar IMAGE_DIR/tokenstore.oci.tar.
	go run ./hack/image -version '$(VERSION)' -commit '$(COMMIT)' -ldflags '$(LDFLAGS)' -chart charts/tokenstore/Chart.yaml -out '$(IMAGE_DIR)/tokenstore' -archive '$(IMAGE_DIR)/tokenstore.oci.tar'

.PHONY: release
release: ## Release VERSION (semver, e.g. make release VERSION=0.1.0) into RELEASE_DIR: image, chart, static binaries, SHA256SUMS, SBOMs (docs/release.md).
	VERSION='$(VERSION)' COMMIT='$(COMMIT)' LDFLAGS='$(LDFLAGS)' RELEASE_DIR='$(RELEASE_DIR)' hack/release/release.sh

.PHONY: test
test: ## Run every test (PostgreSQL on 127.0.0.1:5432, envtest, Chromium, generated-code drift), the cluster suite on a real single-node cluster, then the fuzz targets for FUZZTIME each.
	hack/ensure-postgres.sh
	hack/ensure-packages.sh
	$(MAKE) verify
	KUBEBUILDER_ASSETS="$$(hack/build-envtest.sh | tail -n1)" go test $(GO_TEST_FLAGS) ./...
	go test $(GO_TEST_FLAGS) -tags dev ./cmd/tokenstore/ ./internal/app/ ./internal/devidp/
	$(MAKE) e2e-cluster
	$(MAKE) fuzz

.PHONY: e2e-cluster
e2e-cluster: image ## Cluster suite (root): build and import the images, start the local single-node cluster, install the chart as docs/install.md says and drive it (test/cluster), stop the cluster. E2E_KEEP=1 leaves it up; E2E_EXISTING_CLUSTER=1 uses $$KUBECONFIG's.
	hack/e2e-cluster.sh

.PHONY: fuzz
fuzz: ## Fuzz every parser of outside input for FUZZTIME each (their seeds also run in plain go test).
	FUZZTIME=$(FUZZTIME) hack/fuzz.sh

.PHONY: lint
lint: ## gofmt, go vet and staticcheck.
	hack/tools.sh staticcheck
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	go vet ./...
	bin/staticcheck ./...
	go vet -tags dev ./cmd/tokenstore/ ./internal/app/ ./internal/devidp/ ./test/cluster/testidp/
	bin/staticcheck -tags dev ./cmd/tokenstore/ ./internal/app/ ./internal/devidp/ ./test/cluster/testidp/
	go vet -tags cluster ./test/cluster/
	bin/staticcheck -tags cluster ./test/cluster/

.PHONY: bench
bench: bench-go bench-hotpath bench-workload bench-refresh ## Every benchmark of docs/performance.md: the Go benchmarks, then the hot-path, workload and refresh scripts, each writing its section (about 30 minutes).

.PHONY: bench-go
bench-go: ## Run the Go benchmarks (BENCH, BENCH_COUNT; output in bin/bench.txt).
	hack/ensure-postgres.sh
	KUBEBUILDER_ASSETS="$$(hack/build-envtest.sh | tail -n1)" go test -run '^$$' -bench '$(BENCH)' -benchmem -count $(BENCH_COUNT) ./... | tee bin/bench.txt

.PHONY: faults
faults: ## Fault suite: PostgreSQL and provider outages, provider readiness, rotation races, SIGKILL during refreshes (loopback, throwaway cluster, envtest).
	hack/ensure-postgres.sh
	KUBEBUILDER_ASSETS="$$(hack/build-envtest.sh | tail -n1)" go test -tags faults -count=1 -timeout 15m -v ./test/faults/...

.PHONY: bench-hotpath
bench-hotpath: ## Token hot path against pgbench in one run; writes docs/performance.md (about 4 minutes).
	hack/bench/run.sh

.PHONY: bench-workload
bench-workload: ## Workload token exchange (delegated, service) against the token hot path over sockets, real kube-apiserver (envtest) and PostgreSQL; writes docs/performance.md (about 5 minutes).
	hack/bench/workload.sh

.PHONY: bench-refresh
bench-refresh: ## Refresh path against the provider's own refresh rate, the provider on a core of its own (LAYOUT=split) and sharing both (shared); writes docs/performance.md (about 6 minutes).
	LAYOUT=split hack/bench/refresh.sh
	LAYOUT=shared hack/bench/refresh.sh

.PHONY: clean
clean: ## Remove build outputs (keeps the tool cache).
	rm -rf bin/tokenstore bin/bench.txt
