# Everyday commands. `make help` lists them.
SHELL := /bin/bash
CARGO ?= cargo
NAMESPACE ?= ottoscaler
EVENT_TASK ?= task-123
EVENT_PODS ?= 3

.PHONY: help deps controlplane tools otelcol build run test chaos bench bench-peers test-event fmt lint deploy logs demo up up-cluster clean check-image

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

deps: ## install the Debian packages the tests need (redis-server, redis-cli)
	scripts/install-deps.sh

controlplane: ## build the test control plane (etcd, kube-apiserver, kube-scheduler, kube-controller-manager, kubectl) from Go modules
	testenv/controlplane/build.sh

tools: ## build the test tools (helm, promtool, kube-score; the Prometheus Operator's CRDs) from Go modules
	testenv/tools/build.sh

otelcol: ## build the OpenTelemetry Collector the trace tests export to (OTLP receiver, span file exporter) from Go modules
	testenv/otelcol/build.sh

build: ## build the release binary
	$(CARGO) build --release --bin ottoscaler

check-image: ## run the Dockerfile's build stage in a sandbox (no Docker engine needed) and check the binary
	python3 scripts/test_check_dockerfile.py
	scripts/check-dockerfile.py --smoke=--version

run: ## run ottoscaler against $$KUBECONFIG and $$REDIS_URL
	$(CARGO) run --bin ottoscaler -- run

test: deps controlplane tools otelcol ## run every test (unit, actor, Redis, end-to-end, chart, monitoring, traces) against real components
	$(CARGO) test --workspace --all-targets --locked --no-fail-fast

bench: deps controlplane ## benchmarks B1-B6, H1, H2, F1 against the release binary (about 21 min); writes target/bench/results.json and docs/benchmarks.md
	$(CARGO) build --release --bin ottoscaler -p ottoscaler
	$(CARGO) run --release -p bench -- --ottoscaler target/release/ottoscaler

bench-peers: deps controlplane ## make bench plus K1, ottoscaler next to KEDA's ScaledJob (builds KEDA once, cached: testenv/keda/build.sh)
	testenv/keda/build.sh >/dev/null
	$(CARGO) build --release --bin ottoscaler -p ottoscaler
	$(CARGO) run --release -p bench -- --ottoscaler target/release/ottoscaler --peers

chaos: deps controlplane ## the reliability suite at full size (HA included) + the event-parser fuzz target (~20 min); writes docs/reliability.md
	scripts/chaos.sh

test-event: ## send the seed's sample event (scale_up, 3 pods, task-123)
	$(CARGO) run --bin ottoscaler -- send-event --type scale_up --pod-count $(EVENT_PODS) --task-id $(EVENT_TASK)

fmt: ## format the code
	$(CARGO) fmt --all

lint: ## formatting check and clippy with warnings as errors
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

up: controlplane ## start the control plane + kubesim on loopback (Ctrl-C stops)
	$(CARGO) run -p testenv -- up --dir target/testenv

up-cluster: controlplane ## like `up`, plus manifests/dev applied: ottoscaler (debug build) and Redis run for real as sandboxed pods
	$(CARGO) build --bin ottoscaler
	$(CARGO) run -p testenv -- up --dir target/testenv \
		--map-image ghcr.io/otto-ci/ottoscaler:0.1.0=target/debug/ottoscaler \
		--map-image redis:7-alpine= \
		--apply-k manifests/dev

deploy: ## install into the current kube context (kubectl apply -k manifests)
	kubectl apply -k manifests

logs: ## follow the deployed ottoscaler's logs
	kubectl -n $(NAMESPACE) logs -f deploy/ottoscaler

demo: deps controlplane ## everything on loopback: Redis, control plane, kubesim, ottoscaler, sample events
	scripts/demo.sh

clean: ## remove build outputs (the cached control plane, tools and collector stay in ~/.cache/ottoscaler)
	$(CARGO) clean
