# The two entry points a fresh machine needs (see README.md):
#   make run    runs the manager (on a local control plane when no cluster is configured)
#   make test   runs every check and test
# Each does its own set-up: virtualenv, Python packages, Kubernetes binaries, the node's Debian packages,
# the image tools and Prometheus. Images are built (and cached) by the commands that need them.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test lint typecheck unit integration e2e-local e2e-node node-images e2e-kind images kind-load venv binaries prometheus bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

binaries:
	bash hack/provision-binaries.sh >/dev/null
	bash hack/provision-node.sh >/dev/null
	bash hack/provision-image-tools.sh >/dev/null

prometheus:
	bash hack/provision-prometheus.sh

run: venv binaries
	$(BIN)/python -m e2e.localcluster.run -- $(ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest -m "not cluster and not prometheus and not images"

integration: venv binaries prometheus node-images
	$(BIN)/pytest -m "cluster or prometheus or images"

E2E_FLAGS := -p no:cacheprovider -rfEs

# The three pytest runs all run (each names its own failures); the target fails if any failed. The images
# are built first (cached; several minutes on a cold cache), so no test's time limit includes a build.
test: venv binaries prometheus node-images lint typecheck
	@status=0; \
	$(BIN)/pytest || status=1; \
	$(BIN)/pytest e2e/suite --target local $(E2E_FLAGS) || status=1; \
	$(BIN)/pytest e2e/suite --target node $(E2E_FLAGS) || status=1; \
	exit $$status

e2e-local: venv binaries
	$(BIN)/pytest e2e/suite --target local $(E2E_FLAGS)

# The e2e suite on the local cluster's real node: manager Deployment, real pods, offline images.
e2e-node: venv binaries node-images
	$(BIN)/pytest e2e/suite --target node $(E2E_FLAGS)

# Build (or find in the cache) every image the local node runs, offline.
node-images: venv binaries
	$(BIN)/python -m e2e.images build

# The kind path needs Docker, kind and internet access (not available in CI here).
TAG          ?= latest
KIND_CLUSTER ?= kserve-py
images:
	docker build -t kserve-py/manager:$(TAG) .
	docker build -f qpext/Dockerfile -t kserve-py/qpext:$(TAG) .

kind-load:
	KIND_CLUSTER=$(KIND_CLUSTER) TAG=$(TAG) bash hack/kind-load-images.sh

e2e-kind: venv
	KIND_CLUSTER=$(KIND_CLUSTER) TAG=$(TAG) bash e2e/kind/run.sh

bench: venv binaries prometheus
	bash hack/provision-bench-tools.sh
	$(BIN)/python -m benchmarks.workqueue_throughput
	$(BIN)/python -m benchmarks.informer_sync
	$(BIN)/python -m benchmarks.isvc_scale
	$(BIN)/python -m benchmarks.manager_scale
	$(BIN)/python -m benchmarks.webhook_latency
	$(BIN)/python -m benchmarks.webhook_idle_connections
	$(BIN)/python -m benchmarks.local_node
	$(BIN)/python -m benchmarks.qpext_bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
