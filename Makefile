# Two commands do all setup on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# `make smoke INSTALL= VENV=<other venv>` uses a venv as it is, without installing into it.
INSTALL ?= $(STAMP)
# This checkout's helpers win over whatever the venv has installed (notebook kernels and servers inherit it).
export PYTHONPATH := $(CURDIR)
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
RUN_DIR := .workspace/executed
APP_PORT ?= 8501

.PHONY: install run test smoke lint check-databricks bench soak app stop clean docs

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --progress-bar off -e '.[local,dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

run: $(INSTALL)  ## execute every notebook end to end on the local backend
	$(PY) -m helpers.run_notebooks --output-dir $(RUN_DIR) $(NOTEBOOKS)

test: $(INSTALL)  ## the test suite (small sizes), including notebook smoke runs, one worker per core
	$(PY) -m pytest -q -n auto --dist loadfile --no-loadscope-reorder

smoke: $(INSTALL)  ## the quick subset: features, model and its endpoint (00, 01, 03), teardown, bundle, settings
	$(PY) -m pytest -q tests/test_bundle.py tests/test_config.py tests/test_check_databricks.py tests/test_notebooks.py \
		-k "not test_notebook_runs or setup_feature_tables or train_and_register or sync_serving_with_lookups"

check-databricks: $(INSTALL)  ## the bundle and notebook 05's SDK job through Databricks' typed bundle models, runtimes, widgets
	$(PY) -m helpers.check_databricks

lint: $(INSTALL)
	$(VENV)/bin/ruff check helpers tests app benchmarks docs
	$(VENV)/bin/ruff format --check helpers tests app benchmarks docs

bench: $(INSTALL)  ## benchmarks vs Feast and mlflow models serve (BENCH_ARGS=--quick for a smoke run), then the soak
	$(PY) -m benchmarks $(BENCH_ARGS)
	$(PY) -m benchmarks.soak $(SOAK_ARGS)

soak: $(INSTALL)  ## 200 req/s, 3 min warm-up + 60 s: 0 errors and flat memory, or it fails (SOAK_ARGS=--rate 100)
	$(PY) -m benchmarks.soak $(SOAK_ARGS)

app: $(INSTALL)  ## the dashboard (app/) on 127.0.0.1:$(APP_PORT), against the local workspace server
	$(PY) -m helpers.local.dashboard start --port $(APP_PORT)

stop: $(INSTALL)  ## stop the dashboard, the local workspace server and the continuous online-table sync
	$(PY) -m helpers.local.dashboard stop
	$(PY) -m helpers.local.server stop
	$(PY) -m helpers.local.continuous_sync stop

docs: $(INSTALL) | $(RUN_DIR)/$(notdir $(lastword $(NOTEBOOKS)))  ## the course site in site/, from the executed notebooks
	DOCS_NOTEBOOKS_DIR=$(RUN_DIR) NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

$(RUN_DIR)/%.ipynb:  # no executed notebooks yet: execute them all (`make run` again refreshes them)
	$(MAKE) run

clean: stop
	rm -rf .workspace site
