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

GRADE_TIMEOUT ?= 120
STORY_TIMEOUT ?= 1200
NOTEBOOK_TIMEOUT ?= 3600
NPROC ?= 2
STEPS ?= 800
BROWSER_TIMEOUT ?= 600
BROWSER_STAMP := $(VENV)/.browser-installed

.PHONY: lab lab-lecturer install book test unit notebooks lint format clean help student grade slides rise test-browser train-ddp

help:  ## list the commands
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

# The install steps live in tools/course.py (stdlib only), which is also the no-`make` path:
# `python tools/course.py lab|test|install`.
$(STAMP): pyproject.toml
	$(PYTHON) tools/course.py install --force --venv "$(VENV)" --torch "$(TORCH_SPEC)" --kernel $(KERNEL_NAME)

install: $(STAMP)  ## create .venv and install the course (idempotent)

# tools/course.py: --allow-root as root, --ip=0.0.0.0 in a container (IP= overrides), no browser
# without a display (the URL is printed), nbgrader's panels off; MPLBACKEND unset for the kernels.
lab: $(STAMP)  ## open the course in JupyterLab at the welcome notebook
	$(PY) tools/course.py lab --no-install --venv "$(VENV)" --port $(PORT) $(if $(IP),--ip $(IP))

lab-lecturer: $(STAMP)  ## JupyterLab with nbgrader's Formgrader in build/grading/ (runs the student build first)
	$(PY) tools/course.py lab --lecturer --no-install --venv "$(VENV)" --port $(PORT) $(if $(IP),--ip $(IP))

BOOK_STAMP := $(VENV)/.book-installed
$(BOOK_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e ".[book]"
	@touch $(BOOK_STAMP)

book: $(BOOK_STAMP)  ## the course website from the stored outputs in build/book/ (open index.html; offline)
	$(PY) tools/build_book.py $(BOOK_ARGS)

test: $(STAMP)  ## run every test: lint, unit tests, then every notebook under nbval
	$(VENV)/bin/ruff check course_lib tests benchmarks grading
	$(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env \
		--nbval-sanitize-with tests/nbval_sanitize.cfg --durations=15 -q $(PYTEST_ARGS); \
	rc=$$?; [ $$rc -ne 5 ] || echo "pytest collected no tests: that is a failure" >&2; exit $$rc

unit: $(STAMP)  ## unit tests of course_lib only (fast; `make test` also runs tests/test_grading.py)
	$(PY) -m pytest tests -q --ignore=tests/test_grading.py $(PYTEST_ARGS)

notebooks: $(STAMP)  ## every notebook under nbval only
	$(PY) -m pytest notebooks --nbval-lax --nbval-current-env \
		--nbval-sanitize-with tests/nbval_sanitize.cfg --durations=15 -q $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check course_lib tests benchmarks grading tools

format: $(STAMP)  ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format course_lib tests benchmarks grading

student: $(STAMP)  ## student notebooks (nbgrader: no solutions, hidden tests or outputs) in build/student/
	$(PY) -m grading.grade student

# Student code runs in a bubblewrap sandbox (grading/sandbox.py): installed here with apt-get when
# missing and run as root; otherwise grading refuses unless UNSAFE_NO_SANDBOX=1 (no isolation).
grade: $(STAMP)  ## autograde SUBMISSIONS=dir (dir/<student>/<notebook>.ipynb), sandboxed: build/grading/grades.csv + feedback
	@test -n "$(SUBMISSIONS)" || { echo "usage: make grade SUBMISSIONS=path/to/folder (one folder per student)" >&2; exit 2; }
	@command -v bwrap >/dev/null || [ "$(UNSAFE_NO_SANDBOX)" = 1 ] || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing bubblewrap (apt-get), the sandbox student notebooks run in ..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null || true; \
	  fi; }
	UNSAFE_NO_SANDBOX="$(UNSAFE_NO_SANDBOX)" $(PY) -m grading.grade grade "$(SUBMISSIONS)" \
		--timeout $(GRADE_TIMEOUT) --story-timeout $(STORY_TIMEOUT) --notebook-timeout $(NOTEBOOK_TIMEOUT)

slides: $(STAMP)  ## offline reveal.js decks of every notebook in build/slides/ (open index.html)
	$(PY) tools/build_slides.py $(SLIDES_ARGS)

rise: $(STAMP)  ## install RISE (present live in JupyterLab: Alt+R) with offline lecture defaults
	$(PY) -m pip install --quiet -e ".[lecture]"
	$(PY) tools/rise_settings.py

$(BROWSER_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e ".[browser,lecture]"
	$(PY) tools/rise_settings.py
	@touch $(BROWSER_STAMP)

test-browser: $(BROWSER_STAMP) slides book  ## widgets, RISE and the offline decks checked in Chromium (about 2 min)
	@command -v chromium >/dev/null || test -n "$(CHROMIUM)" || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Chromium (apt-get) ..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "test-browser needs Chromium: sudo apt-get install chromium, or CHROMIUM=/path/to/chrome" >&2; exit 1; fi; }
	CHROMIUM="$(CHROMIUM)" $(if $(shell command -v timeout),timeout $(BROWSER_TIMEOUT)) \
		$(PY) -m pytest tests/browser -q --durations=5 $(PYTEST_ARGS)

train-ddp: $(STAMP)  ## torchrun + DDP: the date recipe on NPROC=2 processes for STEPS=800 -> checkpoints/date_transformer_ddp.pt
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(VENV)/bin/torchrun --standalone --nproc_per_node=$(NPROC) \
		-m course_lib.train --task dates --steps $(STEPS) --out checkpoints/date_transformer_ddp.pt $(TRAIN_ARGS)

clean:  ## remove build outputs and checkpoints (keeps .venv)
	rm -rf build checkpoints .pytest_cache
