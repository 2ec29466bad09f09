# vcm make targets. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true
export PYTHONUNBUFFERED := 1
# Another detector checkpoint (MobileNetV2-FPN) for the benchmarks; empty: the shipped real-KITTI
# detector (zoo:kitti_mobilenet_v2).
DETECTOR_CKPT ?=
# Extra options of the benchmark scripts, e.g. ARGS="--frames 20" (python -m vcm.cli.bench_teleop --help
# lists them).
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install test test-slow test-all demo bench bench-portability bench-parity bench-roi bench-teleop bench-features paper-mini paper detector zoo golden lint clean

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install vcm editable with dev extras (does nothing when up to date)

test: $(STAMP) ## Run the fast tests and the slow ones CI must guard (what CI runs; ~7 min on 2 busy cores)
	$(BIN)/python -m pytest -m "not slow or guard" -q

test-slow: $(STAMP) ## Run only the slow tests
	$(BIN)/python -m pytest -m "slow" -q

test-all: $(STAMP) ## Run every test, slow ones included
	$(BIN)/python -m pytest -q

demo: $(STAMP) ## Shipped zoo codecs and detector on the 10 kitti_mini test frames vs JPEG / HEVC 4:4:4, a brief fine-tune, the report
	$(BIN)/python -m vcm.cli.study --preset demo

bench: $(STAMP) ## Speed/overhead benchmarks: vcm vs CompressAI, real vs estimated bpp, Lightning vs plain loop, anchors, bf16 vs fp32 training
	$(BIN)/python -m vcm.cli.bench

bench-portability: $(STAMP) ## Entropy-table index flips under other CPU kernels, float vs exact h_s, on every kitti_mini frame x the zoo hyperpriors, and the exact path's speed (~10 min)
	$(BIN)/python -m vcm.cli.bench_portability $(ARGS)

bench-parity: $(STAMP) ## bf16-mixed vs fp32 training of the hyperprior, seeds 0 and 1 (4 x 2,000 steps, two at a time, ~55 min): PSNR / bpp on kitti_mini val
	OMP_NUM_THREADS=1 $(BIN)/python -m vcm.cli.bench parity --jobs 2 $(ARGS)

bench-roi: $(STAMP) ## ROI gain coding on the zoo hyperpriors (GT / detector boxes) vs plain zoo, uniform gain, hevc444 (+ROI) on the 20 kitti_mini val+test frames: BD-rates with 95 % intervals, trade-off plot, rate control, times
	$(BIN)/python -m vcm.cli.bench_roi $(ARGS)

bench-teleop: $(STAMP) ## kitti_mini as a stream over a 1 and a 0.5 Mbit/s link (10 fps): ROI gain + per-frame rate control vs x265 with and without ROI at the same per-frame cap
	$(BIN)/python -m vcm.cli.bench_teleop $(ARGS)

bench-features: $(STAMP) ## Does task-awareness work? L-MSFC vs TA-MSF vs feature_hevc vs image coding on real KITTI (~60 min)
	$(BIN)/python -m vcm.cli.bench_features $(if $(DETECTOR_CKPT),--detector-ckpt $(DETECTOR_CKPT)) $(ARGS)

paper-mini: $(STAMP) ## The whole comparison at small scale on this CPU: report under outputs/paper-mini
	$(BIN)/python -m vcm.cli.study --preset mini

paper: $(STAMP) ## The full-scale comparison (real KITTI in KITTI_ROOT, GPU): report under outputs/paper
	$(BIN)/python -m vcm.cli.study --preset full

detector: $(STAMP) ## Train the real-KITTI detector on kitti_mini and ship it in the zoo (kitti_mobilenet_v2)
	$(BIN)/python -m vcm.cli.zoo detector $(ARGS)

zoo: $(STAMP) ## Re-train the zoo hyperpriors (4 rate points) on kitti_mini, ship them, measure them against JPEG/WebP/HEVC
	$(BIN)/python -m vcm.cli.zoo codecs $(ARGS)

golden: $(STAMP) ## Write the golden bitstreams of codecs and zoo models that have none yet (tests/golden/)
	$(BIN)/python -m tests.golden.make

lint: $(STAMP) ## Ruff
	$(BIN)/ruff check vcm tests

clean: ## Remove run output (logs, results, outputs, caches: all git-ignored; not the venv)
	rm -rf logs results outputs multirun lightning_logs wandb .cache .pytest_cache .ruff_cache
