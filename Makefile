# Two commands for a new user: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WORKDIR ?= work
# torch goes in first and pinned: a bare requirement would pull several GB of CUDA wheels.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
DEMO_FLAGS ?=

.PHONY: install test test-slow quality style demo wheel clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev,local]"
	touch $(STAMP)

install: $(STAMP)

quality: install
	$(BIN)/ruff check instructrec_batch jobs tests
	$(BIN)/ruff format --check instructrec_batch jobs tests
	$(BIN)/lint-imports

style: install
	$(BIN)/ruff check --fix instructrec_batch jobs tests
	$(BIN)/ruff format instructrec_batch jobs tests

test: quality
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-slow: install
	$(BIN)/python -m pytest --runslow $(PYTEST_ARGS)

demo: install
	$(BIN)/instructrec-batch demo --config conf/demo.yaml --workdir $(WORKDIR) $(DEMO_FLAGS)

# The package as a wheel for spark-submit (--py-files) and Databricks tasks (conf/databricks).
wheel: install
	rm -rf dist
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir dist .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info dist build
