# raftingest — run `make help` for the targets.
#
# Everything a target needs is installed by the Makefile itself: Debian packages through apt-get
# (as root, or with sudo), Go tools into bin/tools at pinned versions.

SHELL := /bin/bash
GO ?= go
TOOLS := $(CURDIR)/bin/tools
export PATH := $(TOOLS):$(PATH)

# Pinned tool versions.
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.5.1
STATICCHECK_VERSION := v0.8.2 # staticcheck 2026.2.2; the module proxy knows it by its semver tag
# Versity Gateway (Apache-2.0): a real S3 server over a local directory, started on loopback by the
# tests (internal/s3server) and by make run S3=1.
VERSITYGW_VERSION := v1.8.0
PROMETHEUS3 := $(TOOLS)/prometheus3-$(shell $(GO) list -m -f '{{.Version}}' github.com/prometheus/prometheus 2>/dev/null)

# Debian packages the tests and the local cluster use: Prometheus (remote-write client and oracle,
# promtool), Chromium (the /ring page in a real browser), nftables and iproute2 (fault tests),
# protoc (make proto).
DEB_PACKAGES := prometheus chromium nftables iproute2 util-linux

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
TEST_TIMEOUT ?= 18m

.DEFAULT_GOAL := help

.PHONY: help
help: ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: deps
deps: ## install the Debian packages tests need (prometheus, chromium, nftables) if missing
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

.PHONY: build
build: ## build bin/ingester and bin/ringctl
	$(GO) build -o bin/ingester ./cmd/ingester
	$(GO) build -o bin/ringctl ./cmd/ringctl

.PHONY: run
TLS ?= 0
S3 ?= 0

run: build $(if $(filter 1,$(S3)),$(TOOLS)/versitygw) ## run a local 3-node cluster on 127.0.0.1 (data in ./data; Ctrl-C stops it gracefully); TLS=1: mutual TLS with generated certificates; S3=1: blocks in a local S3 server (versitygw)
	@TLS=$(TLS) S3=$(S3) scripts/run-local.sh

.PHONY: test
test: deps build $(TOOLS)/versitygw $(PROMETHEUS3) ## run every test with the race detector (needs root or sudo for apt-get)
	RAFTINGEST_BIN=$(CURDIR)/bin RAFTINGEST_REQUIRE_BROWSER=1 $(GO) test -race -timeout $(TEST_TIMEOUT) ./...

.PHONY: test-short
test-short: ## unit tests only, without the race detector (fast)
	$(GO) test -short ./...

# Prometheus 3, built from the prometheus module at go.mod's version (rebuilt when that changes;
# bin/tools/prometheus3 links to it): the remote-write 2.0 client of the end-to-end tests (Debian's
# prometheus 2.42 sends 1.0 only).
$(PROMETHEUS3):
	GO=$(GO) scripts/build-prometheus3.sh $@
	ln -sfn $(notdir $@) $(TOOLS)/prometheus3

$(TOOLS)/versitygw:
	GOBIN=$(TOOLS) $(GO) install github.com/versity/versitygw/cmd/versitygw@$(VERSITYGW_VERSION)

$(TOOLS)/staticcheck:
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

.PHONY: lint
lint: $(TOOLS)/staticcheck ## gofmt, go vet and staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(TOOLS)/staticcheck ./...

.PHONY: proto
proto: ## regenerate ringpb (and other *pb) from proto/*.proto; installs protoc and its Go plugins
	@command -v protoc >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq protobuf-compiler >/dev/null; }
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	protoc -I proto --go_out=. --go_opt=module=github.com/raftingest/raftingest \
	  --go-grpc_out=. --go-grpc_opt=module=github.com/raftingest/raftingest proto/*.proto

FAULTTEST_DURATION ?= 10m
FAULTTEST_SEED ?=
FAULTTEST_REPORT_DIR ?= $(CURDIR)/bin/faulttest-reports

.PHONY: faulttest
faulttest: deps build $(TOOLS)/versitygw ## Jepsen-style fault matrix for FAULTTEST_DURATION (default 10m), new seeds each round; FAULTTEST_SEED=N replays
	RAFTINGEST_BIN=$(CURDIR)/bin FAULTTEST_MATRIX=1 FAULTTEST_DURATION=$(FAULTTEST_DURATION) FAULTTEST_SEED=$(FAULTTEST_SEED) \
	  FAULTTEST_REPORT_DIR=$(FAULTTEST_REPORT_DIR) $(GO) test -p 1 -count=1 -timeout 0 -v -run '^TestMatrix$$' ./faulttest/sim/ ./faulttest/inproc/ ./faulttest/proc/ \
	  | grep -v -e '^=== ' -e '^        === '; status=$${PIPESTATUS[0]}; echo "reports: $(FAULTTEST_REPORT_DIR)"; exit $$status

.PHONY: fuzz
fuzz: ## run every fuzz target of the repo (found with go test -list '^Fuzz'), each for FUZZTIME (default 30s)
	@list=$$($(GO) test -list '^Fuzz' ./...) || { echo "$$list"; exit 1; }; \
	targets=$$(echo "$$list" | awk '/^Fuzz/ { names = names " " $$1; next } /^ok / { n = split(names, a, " "); for (i = 1; i <= n; i++) print $$2 ":" a[i]; names = "" }'); \
	if [ -z "$$targets" ]; then echo "no fuzz targets found"; exit 1; fi; \
	echo "fuzz targets: $$(echo $$targets | wc -w)"; \
	for spec in $$targets; do \
	  pkg=$${spec%%:*}; fn=$${spec##*:}; echo "== $$pkg $$fn"; \
	  $(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $${FUZZTIME:-30s} $$pkg || exit 1; done

.PHONY: bench
bench: deps build ## benchmarks vs Prometheus on loopback; BENCH_SCALE=small (~2 min), default (~13 min), large (1M series, ~10 min); table in bench/results/
	$(GO) run ./cmd/bench run -bin $(CURDIR)/bin -out $(CURDIR)/bench/results

.PHONY: bench-go
bench-go: ## Go micro-benchmarks of the ring (lookup, commit latency)
	$(GO) test -run '^$$' -bench . -benchtime 2s ./ringstate/ ./raftfsm/

.PHONY: scale
scale: ## 1,000-member ring in simulation (5 Raft voters, 3 zones, heartbeat batching, auto-forget of 1%) and the lookup benchmark on it, ~2 min; last line: members=… commit_p99_ms=… snapshot_bytes=… lookup_ns=… ownership_spread=… entries_per_s_100=… entries_per_s_1000=…; SCALE_MEMBERS=N another size
	GO=$(GO) sh scripts/scale.sh

.PHONY: clean
clean: ## remove bin/ and data/
	rm -rf bin data
