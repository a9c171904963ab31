# The words people say. `make demo` and `make test` set everything up first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-fast test-twins bench proto lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py $(wildcard src/claimcore/_fast/*.pyx)
	./scripts/install-redis.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel cython==3.3.1
	$(BIN)/pip install -q --no-build-isolation -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/claimcore demo

# The whole suite, compiled hot path; then the same _fast tests on the pure-Python twins.
test: setup
	$(BIN)/pytest -q
	CLAIMCORE_NO_EXTENSIONS=1 $(BIN)/pytest -q tests/test_fast_parity.py tests/test_grpc_claims.py

bench: setup
	$(BIN)/pytest benchmarks --benchmark-only --benchmark-group-by=group

proto: setup
	$(BIN)/python scripts/gen_proto.py

lint: setup
	$(BIN)/ruff check src tests benchmarks scripts

clean:
	rm -rf build $(VENV) src/*.egg-info src/claimcore/_fast/*.c src/claimcore/_fast/*.so
