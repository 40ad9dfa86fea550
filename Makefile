# Every target sets itself up: a fresh machine needs only Python 3.11 and make.
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# make run needs only the package and uvicorn: its own stamp, seconds on a fresh machine.
RUN_STAMP := $(VENV)/.installed-run
PORT ?= 8000
# The exact toolchain (make upgrade refreshes it); pyproject.toml keeps users' lower bounds.
PINS := requirements/constraints.txt
BUILD_PINS := requirements/build-constraints.txt

.PHONY: help install run test lint fmt typecheck bench bench-quick fuzz check-model wheel-check clean upgrade drift check-latest

help: ## Show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml $(PINS) $(BUILD_PINS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c $(PINS) pip
	@# The project was called asgi-sessions before 0.2.0, which on PyPI is an unrelated
	@# package with the same import name: neither may stay beside this checkout.
	$(PY) -m pip uninstall -q -y asgi-sessions 2>/dev/null || true
	$(PY) -m pip install -q -c $(PINS) --build-constraint $(BUILD_PINS) -e '.[dev,bench]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the project with its dev extra

$(RUN_STAMP): pyproject.toml $(PINS) $(BUILD_PINS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c $(PINS) pip
	$(PY) -m pip uninstall -q -y asgi-sessions 2>/dev/null || true
	@# The demo imports starlette and the package (aiosqlite); uvicorn serves it;
	@# ua-parser (the [devices] extra) names devices on "Your devices".
	$(PY) -m pip install -q -c $(PINS) --build-constraint $(BUILD_PINS) -e '.[devices]' uvicorn
	touch $(RUN_STAMP)

run: $(RUN_STAMP) ## Serve the demo on http://127.0.0.1:8000, or PORT=8001 (installs only the package, ua-parser and uvicorn)
	$(PY) -m uvicorn demo_app:app --host 127.0.0.1 --port $(PORT)

lint: $(STAMP) ## Ruff (lint and format check) and mypy strict
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) tools/import_graph.py --check

fmt: $(STAMP) ## Format and fix what ruff can
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

test: lint ## Lint, then the whole test suite with branch coverage (starts its own Redis)
	$(PY) -m coverage erase
	$(PY) -m coverage run -m pytest $(PYTEST_ARGS)
	$(PY) -m coverage combine -q || true
	$(PY) -m coverage report

wheel-check: $(STAMP) ## Build sdist and wheel, twine check, run the README quickstarts on the installed wheel
	$(PY) .ci/wheel_check.py

bench: $(STAMP) ## The full benchmark run (15-30 min): bench/RESULTS.md, bench/results/, README table
	$(PY) -m bench

bench-quick: $(STAMP) ## Every benchmark suite, briefly (a smoke run; commits nothing)
	$(PY) -m bench --quick

fuzz: $(STAMP) ## Long fuzzing: the cookie (>= 10,000 cases), then make check-model
	FUZZ_EXAMPLES=10000 $(PY) -m pytest tests/security/test_fuzz.py -p no:cacheprovider -q
	$(MAKE) check-model

MODEL_PROGRAMS ?= 100000
check-model: $(STAMP) ## Long model-checker run: MODEL_PROGRAMS (100,000) concurrent programs per store
	MODEL_PROGRAMS=$(MODEL_PROGRAMS) $(PY) -m pytest tests/model/test_model.py -p no:cacheprovider -q $(PYTEST_ARGS)

upgrade: $(STAMP) ## Refresh the pinned toolchain (requirements/*.txt) to the newest releases
	$(PY) .ci/pins.py upgrade

drift: $(STAMP) ## Report which pins the newest releases have moved past (never fails)
	$(PY) .ci/pins.py drift

check-latest: ## Lint and test against the newest releases, in .venv-latest (pins untouched)
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install -q --upgrade pip
	.venv-latest/bin/python -m pip install -q -e '.[dev,bench]'
	$(MAKE) test PY=.venv-latest/bin/python STAMP=.venv-latest/bin/python

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .venv-latest .pytest_cache .mypy_cache .ruff_cache .coverage* dist
