# `make train DATASET=cifar100 ARGS="sfl.num_clients=100"` and `make test` set up .venv themselves.
PYTHON_BOOT ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATASET ?= cifar10
ARGS ?=
PYTEST_ARGS ?=

.PHONY: help venv train demo test test-fast bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)  ## create .venv and install the project (done by every target on first use)

train: $(STAMP)  ## train: make train DATASET=cifar10|cifar100|imagefolder|synthetic ARGS="key=value ..."
	$(PY) -m mocosfl.train data=$(DATASET) $(ARGS)

demo: $(STAMP)  ## a short run on synthetic data (1-2 minutes on a CPU)
	$(PY) -m mocosfl.train experiment=demo $(ARGS)

test: $(STAMP)  ## the whole suite, as CI runs it
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)  ## the quick subset (no slow tests)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: $(STAMP)  ## step time: MocoSFL with 1, 10, 100 clients against centralized MoCo
	$(PY) benchmarks/step_time.py $(ARGS)

clean:  ## remove run outputs (keeps .venv and data)
	rm -rf logs outputs .pytest_cache
