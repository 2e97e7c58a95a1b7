# swiftdeploy developer targets. Each target works on a fresh Debian/Ubuntu machine with python3 (>= 3.11).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXAMPLE_DIR ?= build/example
# The Open Policy Agent the tests, the demo and the docker end-to-end run use: the version pinned in ONE place,
# src/swiftdeploy/policy/opa_version.py (also the default opa.image), built into $(OPA) by `make opa`.
OPA_VERSION := $(shell sed -n 's/^OPA_VERSION = "\([^"]*\)"$$/\1/p' src/swiftdeploy/policy/opa_version.py)
OPA ?= $(CURDIR)/.tools/bin/opa
# pytest-xdist workers for `make test`. Most tests wait on processes, HTTP and sleeps, so more workers than cores
# pay (tests/README.md has the figures); PYTEST_WORKERS=0 runs the suite serially in one process.
PYTEST_WORKERS ?= 4

.PHONY: venv nginx opa opa-version test lint init-example demo e2e-docker e2e-swarm

# Create the virtualenv and install swiftdeploy (editable) with the test tools.
venv: $(BIN)/swiftdeploy

$(BIN)/swiftdeploy: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

# nginx for the tests and the demo (they run the real nginx): installed when missing and we are root; as a normal
# user it says how to install it.
nginx:
	@if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light; \
		else \
			echo "nginx is missing: run 'sudo apt-get install -y nginx-light'" >&2; exit 1; \
		fi; \
	fi

# OPA $(OPA_VERSION) at $(OPA): `CGO_ENABLED=0 go install github.com/open-policy-agent/opa@v$(OPA_VERSION)` when it
# is not there yet (Go's module and build caches stay in their default places, so a second install is quick).
# Without Go: one warning line, and `make test` skips the OPA-backed tests; with CI=true a missing Go fails here.
opa:
	@OPA_VERSION=$(OPA_VERSION) OPA=$(OPA) bash scripts/install_opa.sh

opa-version:
	@echo $(OPA_VERSION)

# Lint, format check and the whole test suite on $(PYTEST_WORKERS) workers (the OPA-backed tests use $(OPA)).
# Any failure, and "no tests collected" (pytest's exit 5), fails the target.
test: venv nginx opa
	$(MAKE) lint
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist worksteal

# Python lint and format, then the policies under the real OPA: check --strict, fmt, test -v and its coverage.
lint: venv opa
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	@OPA=$(OPA) PYTHON=$(BIN)/python bash scripts/check_policies.sh

# Generate docker-compose.yml, nginx.conf and policy-bundle/ from examples/manifest.yaml into $(EXAMPLE_DIR),
# then check them (nginx -t, ports, images, ...). validate exits 1 without a Docker engine or the demo image;
# the generated files are there either way.
init-example: venv
	mkdir -p $(EXAMPLE_DIR)
	cp examples/manifest.yaml $(EXAMPLE_DIR)/manifest.yaml
	$(BIN)/swiftdeploy -m $(EXAMPLE_DIR)/manifest.yaml init
	-$(BIN)/swiftdeploy -m $(EXAMPLE_DIR)/manifest.yaml validate

# The whole story, unattended, on the local runtime (real nginx + the demo API on 127.0.0.1) in a temporary
# folder: deploy, traffic, canary, chaos, blocked promotion, recover, promotion, audit, teardown. Exit 0 only when
# every step behaved. The policy engine is the real OPA (a supervised `opa run --server`) when `make opa` could
# install it, else the embedded engine; the narration says which one decided.
demo: venv nginx opa
	$(BIN)/swiftdeploy demo

# The docker runtime against a real engine (docs/docker-e2e.md): a private dockerd in a temporary folder, a Debian
# base image made with debootstrap (no registry needed), the demo API, nginx and OPA images (OPA from $(OPA)), then
# the whole story through the swiftdeploy CLI with OPA deciding every gate. Root only (installs docker.io and
# debootstrap when missing). Always stops the engine and fails if any dockerd, container, interface or mount is
# left behind.
e2e-docker: venv opa
	VENV=$(abspath $(VENV)) OPA=$(OPA) bash scripts/e2e_docker.sh

# The swarm runtime on a real multi-node Docker Swarm (docs/swarm.md#the-namespace-test-harness): a manager and two
# workers, each a private dockerd in a network namespace of its own on a host bridge, the same base and images as
# e2e-docker loaded on every node, then the swarm story through the swiftdeploy CLI. Root only. Always removes every
# namespace, interface, mount, process and folder it made and fails if anything is left. For development:
# `scripts/e2e_swarm.sh --up DIR` / `--down DIR` (a cluster left running).
e2e-swarm: venv opa
	VENV=$(abspath $(VENV)) OPA=$(OPA) bash scripts/e2e_swarm.sh
