# The two commands every fresh clone must support: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.runyard-installed

.PHONY: run test venv lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing dependencies into $(VENV) (a few minutes on a fresh clone)..."
	$(PY) -m pip install --progress-bar on -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/runyard up --demo

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check trainer_core server worker tests bench

bench: $(STAMP)
	$(PY) bench/trainer_overhead.py
	$(PY) bench/tracking.py
	$(PY) bench/jobs.py

clean:
	rm -rf $(VENV) runyard-data test-output
