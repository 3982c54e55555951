PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install lint test test-fast demo demo-quick bench clean

install: $(STAMP)

# torch/torchvision are pinned to the builds pip serves from local disk here;
# installing them first keeps the resolver from picking any other build.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# The layers (import-linter contracts in pyproject.toml) and the style (ruff lint and format).
lint: install
	$(BIN)/lint-imports
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts

test: lint
	$(BIN)/python -m pytest -q -n 2 tests

test-fast: install
	$(BIN)/python -m pytest -q -n 2 -m "not slow" tests

demo: install
	$(BIN)/vigos demo

demo-quick: install
	$(BIN)/vigos demo --quick

bench: install
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
