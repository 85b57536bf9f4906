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
# e.g. BENCH_ARGS="--suite input --repeats 5" (scripts/bench.py --help)
BENCH_ARGS ?=
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
PYTEST_ARGS ?=
# make parity: where its outputs and comparison tables go
PARITY_OUT ?= parity_out
OUT ?= demo_out
# reproduction runs: DATA = folder holding the prepared benchmarks (docs/reproduce.md);
# NPROC > 1 shards every cell's samples over that many processes (one GPU each);
# ARGS = extra Hydra overrides, e.g. ARGS="run.limit=20 logger=wandb"
DATA ?= data
# the committed needle model, and where `make train-synthetic` writes a fresh one
NEEDLE_MODEL ?= checkpoints/needle_qwen2_5_vl
TRAIN_OUT ?= checkpoints/needle_retrained
NPROC ?= 1
ARGS ?=
# make train-synthetic ARCH=qwen3_5: the hybrid needle model
ARCH ?= qwen2_5_vl
ifeq ($(NPROC),1)
RUN := $(BIN)/python -m retake.run
else
# (python -m: the accelerate console script imports timm, which fails without torchvision)
RUN := $(BIN)/python -m accelerate.commands.launch --multi_gpu --num_processes $(NPROC) -m retake.run
endif

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv and install everything (idempotent)

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[eval,test,cluster]"
	@# kvpress is the tests' oracle for the text-LLM presses (tests/test_kvpress.py); it declares
	@# transformers<5.3 but its press modules run under ours: installed without its dependencies,
	@# plus the two its package import needs
	$(BIN)/python -m pip install -q -c constraints.txt "cachetools>=5.5.2,<6" "fire>=0.6,<0.7"
	$(BIN)/python -m pip install -q --no-deps kvpress==0.5.5
ifneq ($(HAS_GPU),1)
	@# CPU-only: the torchvision that lmms-eval pulls is a CUDA build that fails to import
	@# beside CPU torch and then breaks transformers' imports; nothing here needs it.
	$(BIN)/python -m pip uninstall -q -y torchvision || true
endif
	$(BIN)/python -c "import torch, transformers, lmms_eval, hydra, decord, av, kvpress.presses.snapkv_press; print('installed: torch', torch.__version__, '| transformers', transformers.__version__)"
	touch $(STAMP)

test: setup ## run the test suite (fast tests; < 15 min on 2 CPU cores)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q $(PYTEST_ARGS)

test-slow: setup ## run the slow tests only
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q -m slow $(PYTEST_ARGS)

parity: ## lmms-eval's own Qwen wrappers vs protocol=lmms_eval, sample by sample (builds .venv-parity, ~8.5 GB; not part of make test)
	OUT=$(PARITY_OUT) bash scripts/parity_check.sh

demo: setup ## offline end-to-end demo on tiny models and generated videos, prints a table
	$(BIN)/python scripts/demo.py --out $(OUT)

reproduce-table1: setup ## paper Table 1 (main results, 16K): all cells, then `make tables`
	$(RUN) -m +experiment=table1 data_root=$(DATA) $(ARGS)
	$(MAKE) tables

reproduce-table2: setup ## paper Table 2 (compression methods, Qwen2-VL-7B, 1024 frames, 1K)
	$(RUN) -m +experiment=table2 data_root=$(DATA) $(ARGS)
	$(MAKE) tables

reproduce-table3: setup ## paper Table 3 (ablation rows 0-6)
	$(RUN) -m +experiment=table3 data_root=$(DATA) $(ARGS)
	$(MAKE) tables

reproduce-table4: setup ## paper Table 4 (fine-grained temporal tasks)
	$(RUN) -m +experiment=table4 data_root=$(DATA) $(ARGS)
	$(MAKE) tables

compare-2026: setup ## every method, old and new, at Table 2's budget (conf/experiment/compare_2026.yaml)
	$(RUN) -m +experiment=compare_2026 data_root=$(DATA) $(ARGS)
	$(MAKE) tables

ablation: setup ## Hydra multirun grid: methods x budget x frames (conf/experiment/ablation.yaml)
	$(RUN) -m +experiment=ablation data_root=$(DATA) $(ARGS)
	$(MAKE) tables

tables: setup ## results/table1..4.{md,csv}, the ablation grid and plots from results/runs/*/metrics.json
	$(BIN)/python scripts/make_tables.py --runs results/runs --paper results/paper --out results

train-synthetic: setup ## train the needle model from scratch on CPU (~55 min on 2 cores) into $(TRAIN_OUT); ARCH=qwen3_5: the hybrid one
ifeq ($(ARCH),qwen3_5)
	$(BIN)/python scripts/train_synthetic.py --arch qwen3_5 --steps 1300 --out checkpoints/needle_qwen3_5_retrained --compare checkpoints/needle_qwen3_5
else
	$(BIN)/python scripts/train_synthetic.py --out $(TRAIN_OUT) --compare $(NEEDLE_MODEL)
endif

bench: setup ## speed + memory suites (engine overhead, memory vs frames, input pipeline, eval throughput) -> results/bench
	$(BIN)/python scripts/bench.py $(BENCH_ARGS)

clean: ## remove demo outputs and caches (keeps .venv)
	rm -rf $(OUT) .pytest_cache
	find . -name __pycache__ -type d -prune -not -path "./$(VENV)/*" -exec rm -rf {} +

.PHONY: parity help setup test test-slow demo bench clean train-synthetic tables ablation compare-2026 reproduce-table1 reproduce-table2 reproduce-table3 reproduce-table4
