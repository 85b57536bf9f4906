# retake: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch is installed first and pinned by constraints.txt; pass extra pip arguments (an
# index for a CPU-only build, say) through TORCH_PIP_ARGS.
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
PYTEST_ARGS ?=
OUT ?= demo_out

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv and install everything (idempotent)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[eval,test]"
ifneq ($(HAS_GPU),1)
	@# CPU-only: the torchvision that lmms-eval pulls is a CUDA build that fails to import
	@# beside CPU torch and then breaks transformers' imports; nothing here needs it.
	$(BIN)/python -m pip uninstall -q -y torchvision || true
endif
	$(BIN)/python -c "import torch, transformers, lmms_eval, hydra, decord, av; print('installed: torch', torch.__version__, '| transformers', transformers.__version__)"
	touch $(STAMP)

test: setup ## run the test suite (fast tests; < 15 min on 2 CPU cores)
	$(BIN)/python -m pytest -n 2 -q $(PYTEST_ARGS)

test-slow: setup ## run the slow tests only
	$(BIN)/python -m pytest -n 2 -q -m slow $(PYTEST_ARGS)

demo: setup ## offline end-to-end demo on tiny models and generated videos, prints a table
	$(BIN)/python scripts/demo.py --out $(OUT)

bench: setup ## engine vs plain transformers forward: prefill time and peak memory ratios
	$(BIN)/python scripts/bench.py

clean: ## remove demo outputs and caches (keeps .venv)
	rm -rf $(OUT) .pytest_cache
	find . -name __pycache__ -type d -prune -not -path "./$(VENV)/*" -exec rm -rf {} +

.PHONY: help setup test test-slow demo bench clean
