# Each target does its own set-up: a virtual environment in .venv, the project installed in it,
# and real PostgreSQL and Redis servers started for the command unless DATABASE_URL / REDIS_URL
# point at running ones (devtools/services.py).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
WITH_SERVICES := $(PY) -m devtools.services --
ROWS ?= 20000
BENCH_ARGS ?=
FLOWER_ARGS ?=
METRICS_ARGS ?=

.PHONY: venv demo test bench lint clean flower metrics

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(WITH_SERVICES) $(VENV)/bin/uuid-migrate demo --rows $(ROWS)

test: venv
	$(WITH_SERVICES) $(PY) -m pytest $(PYTEST_ARGS)

# The benchmark into BENCHMARKS.md and docs/benchmark.png: 200,000 and 1,000,000 users (about
# 6 minutes on 2 CPUs). BENCH_ARGS=--quick: 200,000 users only, under 3 minutes; --scale-out:
# also 1, 2 and 4 workers; --memory-sizes 1000000,3000000: memory at each size; --rounds 3: each
# method 3 times per size, in alternating order, the medians reported (a noisy machine).
bench: venv
	$(WITH_SERVICES) $(PY) -m devtools.bench $(BENCH_ARGS)

# Watch a run against the configured broker / database (BROKER_URL or REDIS_URL, DATABASE_URL);
# basic auth from FLOWER_BASIC_AUTH=user:password. Both listen on 127.0.0.1 unless told otherwise.
flower: venv
	$(VENV)/bin/uuid-migrate flower $(FLOWER_ARGS)

metrics: venv
	$(VENV)/bin/uuid-migrate metrics $(METRICS_ARGS)

lint: venv
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
