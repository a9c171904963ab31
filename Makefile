# The words people say. `make demo` and `make test` set everything up first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-fast test-twins bench bench-front bench-compare bench-scaling proto lint clean chaos simulate

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py scripts/install-buf.sh $(wildcard src/claimcore/_fast/*.pyx src/claimcore/_fast/*.pxd)
	./scripts/install-redis.sh && ./scripts/install-chromium.sh && ./scripts/install-promtool.sh
	./scripts/install-buf.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel cython==3.3.1
	$(BIN)/pip install -q --no-build-isolation -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/claimcore demo

# The whole suite, compiled hot path; then the tests marked `twins` (those that exercise _fast) on the
# pure-Python twins.
test: setup
	$(BIN)/pytest -q
	CLAIMCORE_NO_EXTENSIONS=1 $(BIN)/pytest -q -m twins

# Microbenchmarks (compiled vs twin), then the system benchmarks of issues 4 and 14 side by side: one table
# with the targets (reported, never failing the run); then the front tier's own (bench-front). Results in
# artifacts/. About 5 minutes. See benchmarks/README.md.
bench: setup
	mkdir -p artifacts
	$(BIN)/pytest benchmarks --benchmark-only --benchmark-group-by=group --benchmark-min-rounds=30 \
		--benchmark-json=artifacts/micro.json
	$(BIN)/python -m benchmarks.system --micro artifacts/micro.json --json artifacts/bench.json
	$(MAKE) --no-print-directory bench-front

# Issue 14's front-tier targets, each run side by side (about 3 minutes): the auto-batching client
# against ClaimBatch and its linger's delay; --workers 2 against 1; one launch through
# `loadgen --client auto` against the same launch unary (200,000 users; --users 1000000 by hand).
bench-front: setup
	mkdir -p artifacts
	$(BIN)/python -m benchmarks.client_batching
	$(BIN)/python -m benchmarks.workers
	$(BIN)/python -m benchmarks.launch_cost --out artifacts/launch_cost

# The microbenchmarks against benchmarks/baseline.json: fails if a group's compiled/twin ratio falls
# more than 25% below the baseline's. New baseline: $(BIN)/python -m benchmarks.system.compare --update
bench-compare: setup
	$(BIN)/python -m benchmarks.system.compare

# Issue 5: the same burst on a plain Redis and on Redis Clusters of 1 and 3 masters; Redis work per master
# and how evenly it spreads (about 3 minutes). Results in artifacts/scaling.json. See docs/scaling.md.
bench-scaling: setup
	mkdir -p artifacts
	$(BIN)/python -m benchmarks.system.scaling --json artifacts/scaling.json

# Issue 7: the fault battery of tests/chaos in its full form (more cycles and seeds, bigger bursts; under
# 15 minutes). The short form runs with every `pytest`. See docs/reliability.md.
chaos: setup
	CLAIMCORE_CHAOS=full $(BIN)/pytest -q tests/chaos

# Issue 12: the seeded simulation of everything at once in its long form (the short form runs in
# `make test`): e.g. make simulate SEEDS=1-20 MINUTES=10 [CLUSTER=1]. Exit 1 on any violation; the
# summary is in artifacts/simulation.json. See docs/reliability.md, "The simulation".
SEEDS   ?= 1-10
MINUTES ?= 5
simulate: setup
	mkdir -p artifacts
	$(BIN)/python -m claimcore.simulation --seeds $(SEEDS) --minutes $(MINUTES) \
		$(if $(CLUSTER),--cluster) --json artifacts/simulation.json

proto: setup
	$(BIN)/python scripts/gen_proto.py
	$(BIN)/python scripts/gen_api_docs.py
	.tools/buf/node_modules/.bin/buf lint

lint: setup
	$(BIN)/ruff check src tests benchmarks scripts

clean:
	rm -rf build $(VENV) src/*.egg-info src/claimcore/_fast/*.c src/claimcore/_fast/*.so
