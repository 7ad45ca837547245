# gpuserve: `make up` (local stack), `make test`, `make down`. See README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help

STACK ?= local
# Python 3.11, 3.12 or 3.13 (scripts/find-python looks on PATH, then pyenv and uv installs;
# PYTHON=/path/to/python picks one). VENV=.venv-3.13 keeps a second interpreter's venv apart.
VENV ?= $(CURDIR)/.venv
PY := $(VENV)/bin/python
TOOLS := $(CURDIR)/.tools/bin
STATE := $(CURDIR)/.state

CLUSTER_TARGET := $(shell grep -Eqs 'gpuserve:target: *(aws|kubernetes)' stacks/Pulumi.$(STACK).yaml && echo cluster)
# The Kubernetes provider (make k8s-provider) is on PATH for kubernetes and aws stacks only:
# the CLI would otherwise load it for local stacks too (scripts/build-k8s-provider).
K8S_PROVIDER_DIR := $(CURDIR)/.tools/k8s/provider
export PATH := $(TOOLS):$(if $(CLUSTER_TARGET),$(K8S_PROVIDER_DIR):)$(VENV)/bin:$(PATH)
export PULUMI_HOME ?= $(STATE)/pulumi-home
export PULUMI_BACKEND_URL ?= file://$(STATE)/backend
export PULUMI_SKIP_UPDATE_CHECK := true
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION := true
# The language host runs the program, the dynamic providers and the policy pack on this
# exact interpreter (see scripts/versions.env for why the host is older than the CLI).
export PULUMI_PYTHON_CMD := $(PY)
# A local-target stack's secrets guard nothing but a throwaway cluster token, so such
# stacks (`local`, the examples') use a fixed passphrase. An aws or kubernetes stack (a real
# cluster's token and kubeconfig) must bring its own PULUMI_CONFIG_PASSPHRASE.
ifeq ($(CLUSTER_TARGET),)
export PULUMI_CONFIG_PASSPHRASE ?= gpuserve-local-stack
endif
# The CLI under gpuserve's supervisor (supervisor/): a killed update leaves no process behind.
PULUMI := $(CURDIR)/.tools/supervised/bin/pulumi
# The CrossGuard pack runs on every preview and up; PACK= (empty) turns it off.
PACK ?= policies
POLICY_FLAGS := $(if $(PACK),--policy-pack $(PACK)/run-pack,)

.PHONY: help setup venv pulumi-cli crds splitter supervisor prometheus k8s-provider stack new-stack check-config up down preview refresh recover test test-fast bench bench-quick clean constraints k8s-tools k8s-up k8s-down

help:
	@echo "make up        set everything up and run 'pulumi up' on the local stack"
	@echo "make test      run every test (unit + integration with the real CLI and Ray)"
	@echo "make test-fast unit tests only (no Ray, no CLI)"
	@echo "make preview   pulumi preview of STACK (default: local)"
	@echo "make new-stack NAME=x [FROM=local]  a new stack from another's config, with its own passphrase"
	@echo "make down      pulumi destroy of STACK; stops the local Ray head"
	@echo "make recover   clear what a killed 'pulumi up' leaves in state, then refresh"
	@echo "make bench     rollout safety and GPU cost vs Ray Serve's own update; router overhead;"
	@echo "               false rollbacks of identical code; preview cost (the rollout matrix alone: 96 min here)"
	@echo "make bench-quick  every peer's healthy rollout at moderate load, N=2 (< 5 min)"
	@echo "make k8s-tools build the local test Kubernetes (etcd, kube-*, kwok, KubeRay operator) into .tools/k8s"
	@echo "make k8s-up    start it on 127.0.0.1 (kubeconfig: .state/k8s/kubeconfig); make k8s-down stops it"

setup: venv pulumi-cli crds splitter supervisor

# Quick when nothing changed; remade when the pins change or PYTHON names another version.
venv:
	@scripts/make-venv $(VENV)

# Re-resolve the full pin set after a change of pyproject.toml: a fresh venv on the oldest
# supported Python (so no pin needs a newer one), then freeze.
constraints:
	rm -rf $(CURDIR)/.venv-constraints
	"$$(scripts/find-python 3.11)" -m venv $(CURDIR)/.venv-constraints
	$(CURDIR)/.venv-constraints/bin/pip install --quiet -e '.[test]'
	{ sed -n '1,2p' constraints.txt; $(CURDIR)/.venv-constraints/bin/pip freeze --exclude-editable; } > constraints.new
	mv constraints.new constraints.txt
	rm -rf $(CURDIR)/.venv-constraints
	@echo "constraints.txt re-resolved on 3.11; check that 3.12 and 3.13 still install it (make test-fast VENV=...)"

crds:
	scripts/fetch-crds

# The data plane, from Go's standard library (splitter/); seconds to build.
splitter:
	@scripts/build-splitter

supervisor:
	@scripts/build-supervisor

pulumi-cli:
	scripts/install-pulumi

# A local Kubernetes control plane for tests, on 127.0.0.1, fake (kwok) nodes, the real KubeRay
# operator: built from Go modules into .tools/k8s (scripts/build-k8s), state in .state/k8s.
k8s-tools:
	@scripts/build-k8s

k8s-up: k8s-tools
	@scripts/k8s-up

# The Pulumi Kubernetes provider (kubernetes and aws stacks, the k8s tests), from Go modules
# into .tools/k8s/provider: ~10 min and 4 GB the first time on 2 cores, seconds from Go's build cache.
k8s-provider:
	@scripts/build-k8s-provider

# Keeps .state/k8s; scripts/k8s-down --wipe also removes it.
k8s-down:
	@scripts/k8s-down

# Debian's Prometheus server, unpacked into .tools/ for the Prometheus-gated rollout test.
prometheus:
	@scripts/install-prometheus

# A kubernetes or aws stack needs the Kubernetes provider too.
stack: setup $(if $(filter cluster,$(CLUSTER_TARGET)),k8s-provider)
	@mkdir -p $(STATE)/backend $(PULUMI_HOME)
	@$(PY) -m components.stacks check-passphrase stacks/Pulumi.$(STACK).yaml
	@$(PULUMI) stack select $(STACK) 2>/dev/null || $(PULUMI) stack init $(STACK)

# A new stack from another's config (default: local), with its own salt: make new-stack NAME=dev-eu
new-stack: venv
	@test -n "$(NAME)" || { echo "usage: make new-stack NAME=<stack> [FROM=local]" >&2; exit 2; }
	@$(PY) -m components.stacks new $(NAME) --from $(or $(FROM),local)
	@$(MAKE) --no-print-directory stack STACK=$(NAME)

check-config: venv
	@$(PY) -m components.config stacks/Pulumi.$(STACK).yaml

up: stack check-config
	@PULUMI=$(PULUMI) PYTHON=$(PY) scripts/recover --if-stale $(STACK)
	$(PULUMI) up --yes --stack $(STACK) $(POLICY_FLAGS)
	@echo
	@$(PULUMI) stack output --stack $(STACK)
	@echo
	@echo "Try: curl -s -X POST $$($(PULUMI) stack output endpoints --stack $(STACK) --json | $(PY) -c 'import json,sys; print(next(iter(json.load(sys.stdin).values())))') -H 'content-type: application/json' -d '{\"features\": [5.9, 3.0, 4.2, 1.5]}'"

preview: stack check-config
	$(PULUMI) preview --stack $(STACK) --diff $(POLICY_FLAGS)

refresh: stack
	$(PULUMI) refresh --yes --stack $(STACK)

down: stack
	$(PULUMI) destroy --yes --stack $(STACK)

recover: stack
	PULUMI=$(PULUMI) PYTHON=$(PY) scripts/recover $(STACK)

test: setup prometheus k8s-tools k8s-provider
	cd splitter && GOTOOLCHAIN=local go test ./...
	cd supervisor && GOTOOLCHAIN=local go test ./...
	$(PY) -m pytest

test-fast: venv crds splitter supervisor
	cd splitter && GOTOOLCHAIN=local go test ./...
	cd supervisor && GOTOOLCHAIN=local go test ./...
	$(PY) -m pytest -m "not integration and not faults and not k8s"

bench: setup
	$(PY) -m bench.run
	$(PY) -m bench.report --readme
	$(PY) -m bench.router_overhead
	$(PY) -m bench.false_rollbacks
	$(PY) -m bench.preview_scale
	$(PY) -m bench.node_memory

bench-quick: setup
	$(PY) -m bench.run --quick

clean: down
	rm -rf $(STATE)
