# The two commands: `make bench` and `make test`. Both create .venv on first use.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS ?= dev,torch,dask,app,mlflow,dp
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CONFIG ?= configs/quick.yaml

.PHONY: bench test lint docs format benchmark gate baseline clean install

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
	$(VENV)/bin/pytest -n $(JOBS) --dist loadfile --ignore=tests/benchmarks

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	@$(MAKE) --no-print-directory docs

# The docs site (mkdocs.yml, docs/): --strict turns every warning into a failure, and
# mkdocs.yml's validation settings make broken links and anchors warnings, as are
# unresolved API cross-references (mkdocstrings/autorefs). Output goes to the ignored build/.
DOCS_OUT ?= build/site

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir $(DOCS_OUT)

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

benchmark: $(STAMP)
	$(VENV)/bin/pytest tests/benchmarks -p no:xdist --benchmark-enable --benchmark-autosave --benchmark-storage=results/runs/benchmarks $(BENCH_ARGS)

# The regression gate: run configs/ci.yaml afresh, compare with the committed baseline, in one
# process (`poisonbench gate`). Exit status: 0 no regression, 1 regression, 2 unusable input.
# The diff goes to $(GATE_RUN)/compare.md and compare.json; the run's report.md and plots
# (~2 s) are `poisonbench report $(GATE_RUN)`. `make baseline` refreshes the baseline.
GATE_RUN ?= results/runs/ci
BASELINE ?= results/baseline/ci

gate: $(STAMP)
	$(VENV)/bin/poisonbench gate configs/ci.yaml $(BASELINE) --jobs $(JOBS) --out $(GATE_RUN) --quiet

baseline: $(STAMP)
	$(VENV)/bin/poisonbench run configs/ci.yaml --jobs $(JOBS) --out $(GATE_RUN) --fresh --quiet --no-report
	$(VENV)/bin/poisonbench baseline $(GATE_RUN) $(BASELINE) --force

clean:
	rm -rf results/runs .pytest_cache build dist *.egg-info
