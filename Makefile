# The two commands: `make bench` and `make test`. Both create .venv on first use.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS ?= dev,torch,dask,app,mlflow
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CONFIG ?= configs/quick.yaml

.PHONY: bench test lint format benchmark gate clean install

install: $(STAMP)

# Plain venv + pip: pip's site config resolves torch/torchvision from local disk here.
$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[$(EXTRAS)]'
	@touch $(STAMP)

bench: $(STAMP)
	$(VENV)/bin/poisonbench run $(CONFIG) --jobs $(JOBS)

test: $(STAMP)
	$(VENV)/bin/pytest -n $(JOBS) --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

benchmark: $(STAMP)
	$(VENV)/bin/pytest tests/benchmarks -p no:xdist --benchmark-enable --benchmark-autosave --benchmark-storage=results/runs/benchmarks

clean:
	rm -rf results/runs .pytest_cache build dist *.egg-info
