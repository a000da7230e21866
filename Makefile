# `make train DATASET=cifar100 ARGS="sfl.num_clients=100"` and `make test` set up .venv themselves.
PYTHON_BOOT ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATASET ?=
EVAL ?= linear
CKPT ?=
ARGS ?=
CLIENTS ?= 4
PYTEST_ARGS ?=
# make test runs this many pytest processes side by side (each test uses one CPU thread).
TEST_WORKERS ?= 2
RUNS ?= logs
SWEEP ?=
SWEEP_ID ?=
WANDB := $(VENV)/bin/wandb
# W&B sweeps need an account; say so in one line before wandb prints its own trace.
WANDB_LOGIN_CHECK = $(PY) -c "from mocosfl.utils.wandb_auth import wandb_api_key_configured as ok; raise SystemExit(not ok())" \
	|| { echo "error: W&B sweeps need a W&B account: run $(WANDB) login (or set WANDB_API_KEY); without one, make sweep-local ARGS=\"key=a,b ...\" runs a grid as a Hydra multirun" >&2; exit 2; }

.PHONY: help venv deploy-loopback train eval attack overhead demo test test-fast lint bench study table compare sweep agent sweep-local clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,deploy]"
	$(PY) -m ipykernel install --sys-prefix --name mocosfl --display-name "Python (mocosfl)"
	touch $(STAMP)

venv: $(STAMP)  ## create .venv and install the project (done by every target on first use)

train: $(STAMP)  ## train: make train DATASET=cifar10|cifar100|imagefolder|synthetic ARGS="key=value ..." (default: cifar10, or a resumed run's)
	$(PY) -m mocosfl.train $(if $(DATASET),data=$(DATASET)) $(ARGS)

deploy-loopback: $(STAMP)  ## a deployment on this machine over Flower (TLS, SuperNode keys): make deploy-loopback CLIENTS=4 ARGS="..."
	bash deploy/loopback.sh $(CLIENTS) $(ARGS)

eval: $(STAMP)  ## evaluate a checkpoint: make eval CKPT=<run>/checkpoints/final.ckpt EVAL=linear|semi10|semi1|knn
	$(PY) -m mocosfl.eval ckpt_path=$(CKPT) eval=$(EVAL) $(ARGS)

attack: $(STAMP)  ## model-inversion attack on a checkpoint: make attack CKPT=<run>/checkpoints/final.ckpt
	$(PY) -m mocosfl.attack ckpt_path=$(CKPT) $(ARGS)

overhead: $(STAMP)  ## the paper's Table 1 for a config, per client: make overhead ARGS="experiment=table3_c10_iid_100clients_cut1"
	$(PY) -m mocosfl.overhead $(ARGS)

demo: $(STAMP)  ## a short run on synthetic data (1-2 minutes on a CPU)
	$(PY) -m mocosfl.train experiment=demo $(ARGS)

test: $(STAMP)  ## the whole suite, as CI runs it
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

test-fast: $(STAMP)  ## the quick subset (no slow tests)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff: the lint rules of pyproject.toml and the format check (CI runs both)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

bench: $(STAMP)  ## step time and peak memory: loop and vmap client engines at 10, 100, 1000 clients against centralized MoCo
	$(PY) benchmarks/step_time.py $(ARGS)

study: $(STAMP)  ## the measured CPU study: every method x seeds on real CIFAR-10, JSON + PNG + table (about an hour on 2 cores; ARGS="--quick" for minutes)
	$(PY) benchmarks/study.py $(ARGS)

table: $(STAMP)  ## mean ± std over seeds 1234-1236 of the finished paper rows: make table [RUNS=logs] [ARGS="--metric attack/mse"]
	$(PY) -m mocosfl.table --runs $(RUNS) $(ARGS)

compare: $(STAMP)  ## runs side by side (varying overrides, final metrics, compare.png): make compare RUNS=logs/train/multiruns/<dir> [ARGS="--sort val/knn_top1"]
	$(PY) -m mocosfl.compare $(RUNS) $(ARGS)

# `wandb sweep` ends with "Run sweep agent with: wandb agent <entity/project/id>"; that path
# starts the agent (ANSI colours are stripped in case the output is styled).
sweep: $(STAMP)  ## create a W&B sweep from conf/sweep/<name>.yaml and start an agent: make sweep SWEEP=<name>
	@test -n "$(SWEEP)" || { echo "error: name a sweep: make sweep SWEEP=<file in conf/sweep without .yaml>" >&2; exit 2; }
	@$(WANDB_LOGIN_CHECK)
	@id=$$($(WANDB) sweep conf/sweep/$(SWEEP).yaml 2>&1 | tee /dev/stderr \
		| sed -e 's/\x1b\[[0-9;]*m//g' -n -e 's/.*wandb agent //p' | tail -n 1); \
	test -n "$$id" || { echo "error: wandb sweep printed no sweep id (see above)" >&2; exit 1; }; \
	$(MAKE) --no-print-directory agent SWEEP_ID=$$id

# The agent starts each run as `/usr/bin/env python -m mocosfl.train ...`: .venv/bin goes first
# on PATH so that this `python` is the project's.
agent: $(STAMP)  ## start one more agent on a sweep: make agent SWEEP_ID=<entity/project/id>
	@test -n "$(SWEEP_ID)" || { echo "error: make agent SWEEP_ID=<entity/project/id>" >&2; exit 2; }
	@$(WANDB_LOGIN_CHECK)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(WANDB) agent $(SWEEP_ID)

sweep-local: $(STAMP)  ## Hydra multirun, no W&B sweep: make sweep-local ARGS="sfl.num_clients=5,20 sfl.cut_layer=1,2"
	$(PY) -m mocosfl.train --multirun $(ARGS)

clean:  ## remove run outputs (keeps .venv and data)
	rm -rf logs outputs .pytest_cache
