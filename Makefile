# Top-level tasks for the ePRO intake suite.
#
# Each module is tested from its own directory, so a module's go.mod (not only
# go.work) has to be complete for its tests to build.
#
# Targets are grouped in sections; add new targets in a section of their own
# below the existing ones, with their own .PHONY line.

SHELL := /bin/bash

MODULES := common epro-api epro-mq dlq-worker e2e
GO ?= go
GO_TEST_FLAGS ?= -race -count=1
SERVICES := deploy/scripts/services.sh

# golangci-lint, pinned; installed from the Go module proxy into bin/tools on first use. The version is in the
# file name, so changing it here installs the new one.
GOLANGCI_LINT_VERSION := v2.15.0
GOLANGCI_LINT := $(CURDIR)/bin/tools/golangci-lint-$(GOLANGCI_LINT_VERSION)

.DEFAULT_GOAL := test

# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------

# Checks the alert rules (check-monitoring), lints and runs every module's tests even after a failure, so one
# run reports all broken modules, then fails if any did. A module without Go files yet is skipped.
# Real services are used when EPRO_TEST_* is set (see common/infratest):
#   make services-up && eval "$$(deploy/scripts/services.sh env)" && make test
.PHONY: test
test: $(GOLANGCI_LINT)
	@failed=""; \
	if ! $(MAKE) --no-print-directory check-monitoring; then \
	  failed="$$failed monitoring"; \
	fi; \
	for m in $(MODULES); do \
	  if [ -z "$$(find "$$m" -name '*.go' -not -path '*/testdata/*' -print -quit 2>/dev/null)" ]; then \
	    echo "=== $$m: no Go files yet, skipped"; \
	    continue; \
	  fi; \
	  echo "=== $$m: golangci-lint run ./..."; \
	  if ! (cd "$$m" && $(GOLANGCI_LINT) run --allow-parallel-runners --config ../.golangci.yml ./...); then \
	    failed="$$failed $$m(lint)"; \
	  fi; \
	  echo "=== $$m: $(GO) test $(GO_TEST_FLAGS) ./..."; \
	  if ! (cd "$$m" && $(GO) test $(GO_TEST_FLAGS) ./...); then \
	    failed="$$failed $$m"; \
	  fi; \
	done; \
	if [ -n "$$failed" ]; then \
	  echo "=== FAILED modules:$$failed"; \
	  exit 1; \
	fi; \
	echo "=== all modules passed"

# ---------------------------------------------------------------------------
# Real backing services (Kafka, MariaDB, Redis) on 127.0.0.1
# ---------------------------------------------------------------------------

.PHONY: services-up
services-up:
	$(SERVICES) up

.PHONY: services-down
services-down:
	$(SERVICES) down

.PHONY: services-status
services-status:
	$(SERVICES) status

# ---------------------------------------------------------------------------
# Running the whole suite locally (e2e/cmd/epro-suite)
# ---------------------------------------------------------------------------

# Extra epro-suite flags, e.g. make run SUITE_FLAGS='-partitions 4 -smoke'.
SUITE_FLAGS ?=

# Builds and runs epro-api, epro-mq and dlq-worker on in-process Kafka, MySQL
# and Redis: nothing to install, everything lost on exit. Ctrl-C stops it;
# make then reports "Error 1" because go run exits 1 whenever it is
# interrupted. Whether the services stopped cleanly is in the suite's last lines.
.PHONY: run
run:
	cd e2e && $(GO) run ./cmd/epro-suite -embedded $(SUITE_FLAGS)

# The same on real servers: `make services-up` first, or point
# EPRO_KAFKA_BROKERS, EPRO_MYSQL_DSN and EPRO_REDIS_ADDR elsewhere.
.PHONY: run-real
run-real:
	cd e2e && $(GO) run ./cmd/epro-suite -real $(SUITE_FLAGS)

# Every command in the workspace (the services and epro-suite) into bin/.
.PHONY: build
build:
	$(GO) build -o bin/ github.com/epro-intake/...

# ---------------------------------------------------------------------------
# Benchmarks (e2e/cmd/epro-bench; go test benchmarks beside the packages they measure)
# ---------------------------------------------------------------------------

# Extra epro-bench flags, e.g. make bench BENCH_FLAGS='-out bench.json -profile /tmp/epro-prof'.
BENCH_FLAGS ?=

# The whole suite under load on the real local servers, in a database and on topics of its own: 64
# connections in a closed loop for 20 s, then 1000 reports/s on a fixed schedule for 15 s, then a 50k backlog
# drained by a restarted epro-mq, with the raw kafka-go Writer and raw INSERT limits taken in the same run.
# The servers must be up (make services-up); epro-bench says so when they are not.
.PHONY: bench
bench:
	cd e2e && $(GO) run ./cmd/epro-bench -concurrency 64 -duration 20s -rate 1000 -rate-duration 15s $(BENCH_FLAGS)

# The same benchmark on the three-node cluster (make cluster-up), its topics with replication factor 3 and
# min.insync.replicas 2: compare its figures with a make bench run just before or after to see what RF 3 costs.
.PHONY: bench-cluster
bench-cluster:
	eval "$$($(SERVICES) env)" && test -n "$$EPRO_TEST_KAFKA_CLUSTER_BROKERS" || { echo "the cluster is not up: make cluster-up" >&2; exit 1; }
	eval "$$($(SERVICES) env)" && cd e2e && EPRO_KAFKA_BROKERS="$$EPRO_TEST_KAFKA_CLUSTER_BROKERS" $(GO) run ./cmd/epro-bench -concurrency 64 -duration 20s -rate 1000 -rate-duration 15s $(BENCH_FLAGS)

# go test benchmarks of the hot paths, each with a ratio against the raw library, on the real local Kafka.
.PHONY: bench-go
bench-go:
	eval "$$($(SERVICES) env)" && cd common && $(GO) test -run '^$$' -bench . -benchtime 20000x ./report ./producer

# The reconciliation over RECONCILE_SCALE records (dlq-worker/internal/reconcile/scale_test.go, behind a build
# tag so that make test never sees it skip): peak RSS, time and rate of `dlq-worker reconcile`, on the real
# local services (make services-up). RECONCILE_ROWS=none leaves MySQL empty, so every record is missing.
RECONCILE_SCALE ?= 1000000
RECONCILE_ROWS ?= stored
.PHONY: bench-reconcile
bench-reconcile:
	eval "$$($(SERVICES) env)" && cd dlq-worker && EPRO_RECONCILE_SCALE=$(RECONCILE_SCALE) EPRO_RECONCILE_SCALE_ROWS=$(RECONCILE_ROWS) \
	  $(GO) test -tags reconcilescale -run 'TestReconcileScale$$' -v -timeout 3h ./internal/reconcile

# ---------------------------------------------------------------------------
# Code generation (goctl, pinned as a tool dependency of each REST service)
# ---------------------------------------------------------------------------

# Regenerates routes.go and types.go from epro-api/epro.api and dlq-worker/dlq.api; hand-written handlers and
# logic are left alone. `git diff` afterwards shows whether the checked-in code was current.
.PHONY: gen
gen:
	epro-api/gen.sh
	dlq-worker/gen.sh

# ---------------------------------------------------------------------------
# Lint and module hygiene
# ---------------------------------------------------------------------------

$(GOLANGCI_LINT):
	@echo "=== installing golangci-lint $(GOLANGCI_LINT_VERSION) into bin/tools"
	@mkdir -p bin/tools
	tmp=$$(mktemp -d) && GOBIN="$$tmp" GOWORK=off $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION) \
	  && mv "$$tmp/golangci-lint" $@ && rmdir "$$tmp"

# golangci-lint (.golangci.yml) on every module.
.PHONY: lint
lint: $(GOLANGCI_LINT)
	@failed=""; \
	for m in $(MODULES); do \
	  echo "=== $$m: golangci-lint run ./..."; \
	  (cd "$$m" && $(GOLANGCI_LINT) run --allow-parallel-runners --config ../.golangci.yml ./...) || failed="$$failed $$m"; \
	done; \
	if [ -n "$$failed" ]; then echo "=== lint failed in:$$failed"; exit 1; fi

# Every module on its own go.mod, as its Docker image and `go mod tidy` see it: go.mod and go.sum tidy, and the
# module builds and vets with GOWORK=off.
.PHONY: check-modules
check-modules:
	@failed=""; \
	for m in $(MODULES); do \
	  echo "=== $$m: GOWORK=off go mod tidy -diff, build, vet"; \
	  (cd "$$m" && GOWORK=off $(GO) mod tidy -diff && GOWORK=off $(GO) build ./... && GOWORK=off $(GO) vet ./...) \
	    || failed="$$failed $$m"; \
	done; \
	if [ -n "$$failed" ]; then echo "=== not self-contained:$$failed"; exit 1; fi

# ---------------------------------------------------------------------------
# Monitoring: Prometheus alert rules (deploy/prometheus)
# ---------------------------------------------------------------------------

MONITORING := deploy/prometheus
PROMTOOL ?= promtool

# Checks the alert rules and runs their unit tests with promtool (Debian's prometheus package). Without
# promtool it skips with a note, unless CI=true or EPRO_TEST_REQUIRE_REAL=1, where a check that did not run fails.
.PHONY: check-monitoring
check-monitoring:
	@if ! command -v $(PROMTOOL) >/dev/null 2>&1; then \
	  if [ "$${CI:-}" = true ] || [ "$${EPRO_TEST_REQUIRE_REAL:-}" = 1 ]; then \
	    echo "=== monitoring: $(PROMTOOL) not found; CI requires it (apt-get install prometheus)" >&2; exit 1; \
	  fi; \
	  echo "=== monitoring: SKIPPED, $(PROMTOOL) not found (apt-get install prometheus to check the alert rules)"; \
	  exit 0; \
	fi; \
	echo "=== monitoring: promtool check rules, test rules"; \
	cd $(MONITORING) && $(PROMTOOL) check rules epro.rules.yml && $(PROMTOOL) test rules epro.rules.test.yml

# ---------------------------------------------------------------------------
# The three-node Kafka cluster and the fault tests on it (e2e/cluster_test.go)
# ---------------------------------------------------------------------------

# A three-node KRaft cluster on 127.0.0.1:19092,19094,19096 (topics RF 3, min.insync.replicas 2) beside the
# single broker, plus MariaDB and Redis. cluster-down stops the cluster only; services-down stops the rest.
.PHONY: cluster-up
cluster-up:
	$(SERVICES) up --brokers 3

.PHONY: cluster-down
cluster-down:
	$(SERVICES) cluster down

# Brings the cluster up and runs the cluster tests on it (build tag cluster, so make test never sees them):
# brokers killed, hung and restarted under load, each test printing its load, faults and counts. Without
# -race: the services, three brokers and the load share the machine, and the load must stay steady. Pick
# tests with CLUSTER_TESTS, e.g. make test-cluster CLUSTER_TESTS=TestClusterTwoOfThreeDownOnly503.
CLUSTER_TESTS ?= TestCluster
.PHONY: test-cluster
test-cluster: cluster-up
	eval "$$($(SERVICES) env)" && cd e2e && $(GO) test -tags cluster -run '$(CLUSTER_TESTS)' -count=1 -v -timeout 40m .
