# fadm_lightning — `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# torch and torchvision are installed as a matching pair first (override for your CUDA build)
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=
BENCH_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv demo test test-slow test-fuzz test-scaling test-app test-all bench-train-step test-parity bench-quality bench-ablation bench-sampling bench-data bench-speed bench-gpu bench-distill lint format clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-15s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install $(TORCH_SPEC)
	$(PIP) install -e ".[dev]"
	touch $@

venv: $(VENV)/.installed ## create the virtual environment and install the package (once)

demo: venv ## train the embedded synthetic default on CPU (a few minutes) and print the results
	$(PY) -m fadm_lightning.train

test: venv ## the test suite without the slow tests (< 15 min on 2 cores)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: venv ## only the slow tests (DDP, longer trainings)
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

FUZZ_TABLE ?=
test-fuzz: venv ## every fuzzed media file (tests/fuzz_media.py) through animate, rectify, preprocess and the app; FUZZ_TABLE=docs/fuzz_table.md writes the table
	FADM_FUZZ_TABLE=$(FUZZ_TABLE) $(PY) -m pytest tests/integration/test_fuzz_media.py -m slow $(PYTEST_ARGS)

test-scaling: venv ## SLURM launcher, requeue/resume, two nodes on one machine, shards, N tasks (CPU)
	$(PY) -m pytest tests/integration/test_slurm.py tests/integration/test_multinode.py tests/integration/test_shards.py tests/integration/test_distributed.py $(PYTEST_ARGS)

test-app: venv ## the web app in a headless Chromium (apt-get install chromium chromium-driver; FADM_APP_SCREENSHOTS=dir keeps screenshots)
	$(PY) -m pytest tests/integration/test_app.py -m slow -rs $(PYTEST_ARGS)

test-all: venv ## every test
	$(PY) -m pytest $(PYTEST_ARGS)

test-parity: venv ## compare with the official FADM code: FADM_OFFICIAL_REPO=/path/to/FADM make test-parity
	@test -n "$$FADM_OFFICIAL_REPO" || { echo "FADM_OFFICIAL_REPO=/path/to/FADM make test-parity (a checkout of github.com/zengbohan0217/FADM)"; exit 2; }
	$(PY) -m pytest tests/parity -rs $(PYTEST_ARGS)

bench-quality: venv ## train the synthetic default longer (29 min measured) and report coarse vs refined on the test identities
	$(PY) -m fadm_lightning.train experiment=synthetic_quality logger=csv

# Table 3 in miniature: each variant at the demo's budget with 3 seeds, tested on the test identities
ABLATION_DIR ?= logs/ablation
ABLATION_VARIANTS ?= full: no_color:model.agcn.use_appearance=false no_motion:model.agcn.use_motion_weighting=false
ABLATION_SEEDS ?= 1 2 3
bench-ablation: venv ## Table 3 in miniature: full / w/o color / w/o motion x 3 seeds at the demo budget, mean ± std
	@for seed in $(ABLATION_SEEDS); do for v in $(ABLATION_VARIANTS); do \
	  $(PY) -m fadm_lightning.train logger=csv seed=$$seed $${v#*:} \
	    hydra.run.dir=$(ABLATION_DIR)/$${v%%:*}_seed$$seed || exit 1; \
	done; done
	$(PY) -m fadm_lightning.report multirun_dir=$(ABLATION_DIR)

bench-sampling: venv ## coarse vs refined quality and speed of CKPT=... for several sampler settings (BENCH_ARGS="split=test …")
	@test -n "$(CKPT)" || { echo "CKPT=…: the checkpoint to benchmark"; exit 2; }
	$(PY) -m fadm_lightning.benchmarks.sampling "ckpt='$(CKPT)'" $(BENCH_ARGS)

bench-data: venv ## data-loading throughput of each data module, folders and shards (pairs/s per worker, workers per GPU; BENCH_ARGS="gpu_step_s=…")
	$(PY) -m fadm_lightning.benchmarks.data $(BENCH_ARGS)

bench-train-step: venv ## seconds per training step of the paper model (256², fp32; BENCH_ARGS="threads=2 …")
	$(PY) -m fadm_lightning.benchmarks.train_step steps=2 warmup=1 $(BENCH_ARGS)

# the few-step student of `make bench-quality`'s checkpoint (docs/distillation.md)
TEACHER ?= logs/bench_quality/checkpoints/last.ckpt
DISTILL_DIR ?= logs/distill/student
bench-distill: venv ## distil a 1-call student from TEACHER=… (default: bench-quality's) and print its quality table on the test identities
	@test -f "$(TEACHER)" || { echo "TEACHER=$(TEACHER): no such checkpoint (run make bench-quality first, or set TEACHER=…)"; exit 2; }
	$(PY) -m fadm_lightning.train experiment=fadm_distill teacher=$(TEACHER) logger=csv test=false hydra.run.dir=$(DISTILL_DIR)
	$(PY) -m fadm_lightning.benchmarks.distill "teacher='$(TEACHER)'" "student='$(DISTILL_DIR)'" split=val "teacher_samplers=[own]" "markdown='$(DISTILL_DIR)/quality_val.md'"
	$(PY) -m fadm_lightning.benchmarks.distill "teacher='$(TEACHER)'" "student='$(DISTILL_DIR)'" split=test "markdown='$(DISTILL_DIR)/quality_test.md'" "json='$(DISTILL_DIR)/quality_test.json'"

SPEED_ARGS ?=
bench-speed: venv ## end-to-end animate speed: official 100-step sampler vs the student's fastest preset (SPEED_ARGS="rows=[fastest] …")
	$(PY) -m fadm_lightning.benchmarks.speed $(SPEED_ARGS)

GPU_OUT ?= logs/bench_gpu
bench-gpu: venv ## rectify speed on one GPU (official vs student, fp32/bf16/compile, < 5 min) into GPU_OUT
	$(PY) -m fadm_lightning.benchmarks.gpu "out='$(GPU_OUT)'" $(BENCH_ARGS)

lint: venv ## ruff lint and format check
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

format: venv ## ruff format and autofix
	$(VENV)/bin/ruff format src tests
	$(VENV)/bin/ruff check --fix src tests

clean: ## remove logs and caches (not the virtual environment)
	rm -rf logs .cache .pytest_cache .ruff_cache
