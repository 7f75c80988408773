# The two commands every fresh clone must support: `make run` and `make test`.
# The venv gets runyard[all,dev]: the server, the worker, every optional integration, and the
# test and lint tools (pytest, ruff, mypy and the type stubs); `pip install runyard` alone is trainer_core.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.runyard-installed

.PHONY: run test venv lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing dependencies into $(VENV) (a few minutes on a fresh clone)..."
	$(PY) -m pip install --progress-bar on -e '.[all,dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/runyard up --demo

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

# ruff, then mypy as [tool.mypy] in pyproject.toml configures it (its packages, per-module strictness)
lint: $(STAMP)
	$(VENV)/bin/ruff check trainer_core server worker tests bench
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) bench/trainer_overhead.py
	$(PY) bench/tracking.py
	$(PY) bench/jobs.py

clean:
	rm -rf $(VENV) runyard-data test-output
