# Attention, Step by Step — the two commands a learner needs: `make lab` and `make test`.
# Everything installs into ./.venv. TORCH_SPEC picks the PyTorch build (see README).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
KERNEL_NAME ?= attention-course
STAMP := $(VENV)/.installed
PORT ?= 8888
export MPLBACKEND := agg

.PHONY: lab test unit notebooks lint format clean help

help:  ## list the commands
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m ipykernel install --user --name $(KERNEL_NAME) --display-name "Attention course (.venv)" >/dev/null
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install the course (idempotent)

lab: $(STAMP)  ## open the course in JupyterLab at the welcome notebook
	$(VENV)/bin/jupyter lab --port=$(PORT) notebooks/00_welcome.ipynb

test: $(STAMP)  ## run every test: lint, unit tests, then every notebook under nbval
	$(VENV)/bin/ruff check course_lib tests benchmarks
	$(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env \
		--nbval-sanitize-with tests/nbval_sanitize.cfg --durations=15 -q $(PYTEST_ARGS)

unit: $(STAMP)  ## unit tests of course_lib only (fast)
	$(PY) -m pytest tests -q $(PYTEST_ARGS)

notebooks: $(STAMP)  ## every notebook under nbval only
	$(PY) -m pytest notebooks --nbval-lax --nbval-current-env \
		--nbval-sanitize-with tests/nbval_sanitize.cfg --durations=15 -q $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check course_lib tests benchmarks

format: $(STAMP)  ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format course_lib tests benchmarks

clean:  ## remove build outputs and checkpoints (keeps .venv)
	rm -rf build checkpoints .pytest_cache
