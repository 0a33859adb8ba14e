# Every target sets itself up: a fresh machine with Python 3.11 needs nothing else.
PY ?= python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python
# Extra pip arguments for torch, e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_PIP_ARGS ?=
SCALE ?= small
LAUNCHER ?= parallel
JOBS ?=
EXPERIMENTS ?= all
UI_PORT ?= 5000
SERVER_HOST ?= 127.0.0.1
SERVER_PORT ?= 5055

.PHONY: install test test-slurm slurm-up slurm-down reproduce ui mlflow-server bench

$(VENV)/.installed: pyproject.toml
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	# torch first and explicitly: a bare "torch" requirement would pull a multi-GB CUDA build
	$(PYTHON) -m pip install -q torch==2.13.0 $(TORCH_PIP_ARGS)
	$(PYTHON) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

test: install
	$(PYTHON) -m pytest -q

# Bring up a single-node Slurm on localhost (root, Debian), run the Slurm tests, tear it down.
# A fresh state dir: tear-down stops only the daemons this target started (none if Slurm was already up).
test-slurm: install
	export LRTRANSFER_SLURM_STATE=$$(mktemp -d); bash scripts/slurm_up.sh && \
	LRTRANSFER_REQUIRE_SLURM=1 $(PYTHON) -m pytest -q -m slurm; rc=$$?; bash scripts/slurm_down.sh; exit $$rc

slurm-up:
	bash scripts/slurm_up.sh

slurm-down:
	bash scripts/slurm_down.sh

reproduce: install
	$(PYTHON) -m lrtransfer.reproduce --scale $(SCALE) --launcher $(LAUNCHER) --experiments $(EXPERIMENTS) $(if $(JOBS),--jobs $(JOBS))

ui: install
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/outputs/mlflow.db --host 127.0.0.1 --port $(UI_PORT)

# A shared tracking server for sweeps on many machines (SQLite under outputs/mlflow-server).
mlflow-server: install
	$(PYTHON) -m lrtransfer.mlflow_server run --host $(SERVER_HOST) --port $(SERVER_PORT)

bench: install
	$(PYTHON) scripts/bench_train.py
	$(PYTHON) scripts/bench_launch.py
