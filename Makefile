# kiln's two commands: `make demo` (the main job) and `make test` (everything CI checks).
# Every target creates and reuses the local virtualenv in .venv on its own.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROTO_OUT := src/kiln/server/grpc/_generated
PYTEST_ARGS ?=
LINT_PATHS := $(wildcard src tests benchmarks examples scripts)

.PHONY: demo test install lint format typecheck unit integration proto tools clean

demo: install
	$(BIN)/kiln demo

test: install lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

install: $(STAMP) $(PROTO_OUT)/__init__.py $(BIN)/perf_analyzer

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -e ".[dev,torch,peers]"
	@touch $@

proto: $(PROTO_OUT)/__init__.py

$(PROTO_OUT)/__init__.py: $(STAMP) $(wildcard src/kiln/server/grpc/*.proto) scripts/gen_proto.py
	$(BIN)/python scripts/gen_proto.py

tools: $(BIN)/perf_analyzer

# perf_analyzer (a load generator nobody here wrote) from the tritonclient 2.51.0 wheel.
$(BIN)/perf_analyzer: scripts/install_perf_analyzer.sh | $(STAMP)
	bash scripts/install_perf_analyzer.sh $(VENV)

lint: install
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

format: install
	$(BIN)/ruff format $(LINT_PATHS)
	$(BIN)/ruff check --fix $(LINT_PATHS)

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: install
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(PROTO_OUT) .mypy_cache .ruff_cache .pytest_cache
