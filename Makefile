# Two commands do all setup on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
RUN_DIR := .workspace/executed
APP_PORT ?= 8501

.PHONY: install run test lint bench soak app stop clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --progress-bar off -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

run: $(STAMP)  ## execute every notebook end to end on the local backend
	$(PY) -m helpers.run_notebooks --output-dir $(RUN_DIR) $(NOTEBOOKS)

test: $(STAMP)  ## the test suite (small sizes), including notebook smoke runs
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check helpers tests app benchmarks
	$(VENV)/bin/ruff format --check helpers tests app benchmarks

bench: $(STAMP)  ## benchmarks vs Feast and mlflow models serve (BENCH_ARGS=--quick for a smoke run)
	$(PY) -m benchmarks $(BENCH_ARGS)

soak: $(STAMP)  ## 200 req/s, 3 min warm-up + 60 s: 0 errors and flat memory, or it fails (SOAK_ARGS=--rate 100)
	$(PY) -m benchmarks.soak $(SOAK_ARGS)

app: $(STAMP)  ## the dashboard (app/) on 127.0.0.1:$(APP_PORT), against the local workspace server
	$(PY) -m helpers.local.dashboard start --port $(APP_PORT)

stop: $(STAMP)  ## stop the dashboard and the local workspace server
	$(PY) -m helpers.local.dashboard stop
	$(PY) -m helpers.local.server stop

clean: stop
	rm -rf .workspace
