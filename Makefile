# Every target sets itself up: a fresh machine with Python 3.11 needs nothing else.
PY ?= python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python
# Extra pip arguments for torch, e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_PIP_ARGS ?=
SCALE ?= small
LAUNCHER ?= local
EXPERIMENTS ?= mnist1d_width_lr
UI_PORT ?= 5000

.PHONY: install test test-fast reproduce ui bench clean-outputs

$(VENV)/.installed: pyproject.toml
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	# torch first and explicitly: a bare "torch" requirement would pull a multi-GB CUDA build
	$(PYTHON) -m pip install -q torch==2.13.0 $(TORCH_PIP_ARGS)
	$(PYTHON) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

test: install
	$(PYTHON) -m pytest -q

reproduce: install
	$(PYTHON) scripts/reproduce.py --scale $(SCALE) --launcher $(LAUNCHER) --experiments $(EXPERIMENTS)

ui: install
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/outputs/mlflow.db --host 127.0.0.1 --port $(UI_PORT)

bench: install
	$(PYTHON) scripts/bench_train.py
