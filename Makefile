# Watershed. `make run` runs the all-in-one; `make test` installs what the
# tests need (idempotently, outside the repository) and runs every test.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c

# Never let the go command fetch modules from their origin.
export GOPROXY ?= https://proxy.golang.org
export GOFLAGS ?= -mod=readonly

# Tools the tests use that do not come from Debian are cached here, outside
# the repository, so that later runs reuse them.
TOOLS_DIR ?= $(HOME)/.cache/watershed/tools
PROTOC_GEN_GO_VERSION := v1.36.12
# VictoriaLogs takes Loki's push protocol: the end-to-end log backend.
VICTORIA_LOGS_VERSION := v1.52.1
# Jaeger (v2 binary, module tag v1.76.0) takes OTLP and answers trace queries.
JAEGER_VERSION := 1.76.0
# telemetrygen is the span load of the trace benchmark.
TELEMETRYGEN_VERSION := v0.161.0
# The peers of `make bench-compare`.
VMAGENT_VERSION := v1.151.0
NATS_SERVER_VERSION := v2.15.2
OCB_VERSION := v0.165.0
export PATH := $(TOOLS_DIR)/bin:$(PATH)

MODULES := platform proto deploy services/discovery services/node-collector services/router services/writer-loki services/writer-mimir services/writer-tempo cmd/watershed
CONFIG ?= examples/local.yaml

.PHONY: all build run test bench bench-compare proto tools tools-k8s tools-jaeger tools-bench tools-compare deps-debian tidy clean images

all: build

build:
	@mkdir -p bin
	go build -o bin/discovery ./services/discovery/cmd/discovery
	go build -o bin/node-collector ./services/node-collector/cmd/node-collector
	go build -o bin/router ./services/router/cmd/router
	go build -o bin/writer-mimir ./services/writer-mimir/cmd/writer-mimir
	go build -o bin/writer-loki ./services/writer-loki/cmd/writer-loki
	go build -o bin/writer-tempo ./services/writer-tempo/cmd/writer-tempo
	go build -o bin/watershed ./cmd/watershed

run: build
	./bin/watershed run -config.file=$(CONFIG)

# Debian packages of the real third-party servers the end-to-end tests run.
deps-debian:
	@missing=""; \
	command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	command -v prometheus-node-exporter >/dev/null || missing="$$missing prometheus-node-exporter"; \
	command -v protoc >/dev/null || missing="$$missing protobuf-compiler"; \
	command -v journalctl >/dev/null || missing="$$missing systemd"; \
	[ -x /lib/systemd/systemd-journal-remote ] || command -v systemd-journal-remote >/dev/null || missing="$$missing systemd-journal-remote"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# Jaeger, the real trace backend of the end-to-end trace tests: built once
# per machine (about 15 min on 2 cores), cached in $(TOOLS_DIR)/bin.
tools-jaeger:
	@TOOLS_DIR="$(TOOLS_DIR)" JAEGER_VERSION="$(JAEGER_VERSION)" GOFLAGS= ./hack/jaeger-build.sh

# etcd and kube-apiserver for the tests against a real API server: built
# once per machine (15-50 min on 2 cores), cached in $(TOOLS_DIR)/k8s.
tools-k8s:
	@TOOLS_DIR="$(TOOLS_DIR)" GOFLAGS= ./hack/k8s-test-binaries.sh

tools: deps-debian tools-k8s tools-jaeger
	@if [ ! -x "$(TOOLS_DIR)/bin/protoc-gen-go" ] || ! "$(TOOLS_DIR)/bin/protoc-gen-go" --version | grep -q "$(PROTOC_GEN_GO_VERSION)"; then \
	  echo "installing protoc-gen-go $(PROTOC_GEN_GO_VERSION) into $(TOOLS_DIR)"; \
	  GOBIN="$(TOOLS_DIR)/bin" GOFLAGS= go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION); \
	fi
	@stamp="$(TOOLS_DIR)/bin/.victoria-logs-$(VICTORIA_LOGS_VERSION)"; \
	if [ ! -x "$(TOOLS_DIR)/bin/victoria-logs" ] || [ ! -f "$$stamp" ]; then \
	  echo "installing victoria-logs $(VICTORIA_LOGS_VERSION) into $(TOOLS_DIR)"; \
	  GOBIN="$(TOOLS_DIR)/bin" GOFLAGS= go install github.com/VictoriaMetrics/VictoriaLogs/app/victoria-logs@$(VICTORIA_LOGS_VERSION) && touch "$$stamp"; \
	fi

proto: tools
	cd proto && protoc --go_out=. --go_opt=module=github.com/watershed-dev/watershed/proto watershed/v1/*.proto

test: tools
	go vet $(addprefix ./,$(addsuffix /...,$(MODULES)))
	go test -race -count=1 -timeout 20m $(addprefix ./,$(addsuffix /...,$(MODULES)))

# The trace benchmark's load generator, installed once per version.
tools-bench:
	@stamp="$(TOOLS_DIR)/bin/.telemetrygen-$(TELEMETRYGEN_VERSION)"; \
	if [ ! -x "$(TOOLS_DIR)/bin/telemetrygen" ] || [ ! -f "$$stamp" ]; then \
	  echo "installing telemetrygen $(TELEMETRYGEN_VERSION) into $(TOOLS_DIR)"; \
	  GOBIN="$(TOOLS_DIR)/bin" GOFLAGS= go install github.com/open-telemetry/opentelemetry-collector-contrib/cmd/telemetrygen@$(TELEMETRYGEN_VERSION) && touch "$$stamp"; \
	fi

bench: tools tools-bench build
	go test -run '^$$' -bench . -benchmem -count=1 ./platform/... ./services/node-collector/... ./services/router/receiver/
	go test -run '^$$' -bench PodChangeToAssignment -benchtime 20x -count=1 ./services/discovery/discovery/
	go run ./cmd/watershed/bench/e2e -duration=30s
	go run ./cmd/watershed/bench/e2e -signal=logs -log-rate=10 -duration=30s
	go run ./cmd/watershed/bench/e2e -signal=logs -log-rate=10 -duration=30s -collector-only
	go run ./cmd/watershed/bench/e2e -signal=traces -span-rate=100000 -workers=16 -duration=30s
	go run ./cmd/watershed/bench/e2e -signal=catchup -outage=5m
	go run ./cmd/watershed/bench/e2e -signal=catchup -outage=5m -writers=3

# The peers of the side-by-side benchmark, installed once per version.
tools-compare: deps-debian tools-bench
	@TOOLS_DIR="$(TOOLS_DIR)" VMAGENT_VERSION="$(VMAGENT_VERSION)" NATS_SERVER_VERSION="$(NATS_SERVER_VERSION)" OCB_VERSION="$(OCB_VERSION)" ./hack/bench-peers.sh

# Watershed side by side with vmagent, Prometheus in agent mode and the
# OpenTelemetry Collector: the same targets, files, load, receivers and
# durations for each; one table per signal (bench/results.md keeps them).
bench-compare: tools-compare build
	go run ./cmd/watershed/bench/e2e -signal=compare-metrics -duration=60s
	go run ./cmd/watershed/bench/e2e -signal=compare-metrics -series=10000 -targets=20 -duration=60s
	go run ./cmd/watershed/bench/e2e -signal=compare-metrics -series=100 -targets=1000 -duration=60s
	go run ./cmd/watershed/bench/e2e -signal=compare-logs -log-rate=20 -duration=60s
	go run ./cmd/watershed/bench/e2e -signal=compare-traces -span-rate=50000 -workers=8 -duration=60s

# Container images, one per service (build/Dockerfile.<service>), tagged
# as deploy/base/kustomization.yaml pins them. Needs docker.
IMAGE_REPO ?= ghcr.io/watershed-dev
IMAGE_TAG ?= 0.1.0
SERVICES := node-collector discovery router writer-mimir writer-loki writer-tempo
images:
	for s in $(SERVICES); do docker build -f build/Dockerfile.$$s -t $(IMAGE_REPO)/$$s:$(IMAGE_TAG) . || exit 1; done

tidy:
	for m in $(MODULES); do (cd $$m && GOFLAGS= go mod tidy); done

clean:
	rm -rf bin data
