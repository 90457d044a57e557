# streamtags: two commands on a fresh machine.
#   make demo   set up, start Kafka + Redis + a worker + the simulator, show tags live
#   make test   set up, start Kafka + Redis, run ruff, mypy --strict and every test
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: venv compile stack-up stack-down stack-status lint test unit integration faults demo bench bench-compare bench-scale schemas clean

venv: $(VENV)/.installed $(VENV)/.compiled

# The install compiles the engine with mypyc in place when a C compiler is present, and is
# pure Python otherwise or with STREAMTAGS_PURE=1 (setup.py; decision 0008).
$(VENV)/.installed: pyproject.toml setup.py constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "streamtags needs Python >= 3.11 as $(PYTHON)"; exit 1; }
	@$(PYTHON) -m venv $(VENV) || { echo "python3 -m venv failed: install python3-venv (apt-get install python3-venv)"; exit 1; }
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[dev]'
	@touch $@
	@touch $(VENV)/.compiled

# The compiled modules are rebuilt when a source they are built from or typed against
# changes, so every target that needs the venv (unit, test, bench, ...) runs the code as
# it is; `import streamtags` refuses a stale build made any other way (streamtags.compilation).
COMPILED_FROM := $(wildcard streamtags/engine/*.py streamtags/rulebook/*.py streamtags/contracts/*.py) streamtags/errors.py
$(VENV)/.compiled: $(VENV)/.installed $(COMPILED_FROM)
	$(PY) setup.py -q build_ext --inplace
	@touch $@

# Rebuild the compiled modules now; `STREAMTAGS_PURE=1 make compile` removes them instead.
compile: $(VENV)/.installed
	$(PY) setup.py -q build_ext --inplace
	@touch $(VENV)/.compiled

stack-up: venv
	@stack/stack.sh up

stack-down:
	@stack/stack.sh down

stack-status:
	@stack/stack.sh status

lint: venv
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy streamtags tests bench

unit: venv
	$(VENV)/bin/pytest -q tests/unit

integration: stack-up
	$(VENV)/bin/pytest -q tests/integration

test: stack-up lint
	$(VENV)/bin/pytest -q

# The fault suite (tests/faults, README "Operating"): kills the stack's own Kafka and Redis,
# so never run it beside other tests on the same stack; `make test` leaves it out.
faults: stack-up
	$(VENV)/bin/pytest -q -s tests/faults

schemas: venv
	$(VENV)/bin/streamtags schemas export

demo: stack-up
	@scripts/demo.sh

bench: stack-up
	$(PY) bench/engine.py
	$(PY) bench/live.py

# One worker, then two in one consumer group, on one backlog (bench/scale.py); README "Scaling".
#   make bench-scale BENCH_ARGS="--events 20000 --users 5000"   (add --gated: see the script)
bench-scale: stack-up
	$(PY) bench/scale.py $(BENCH_ARGS)

# streamtags vs Quix Streams vs raw aiokafka on one backlog (bench/compare.py). Quix Streams is
# a benchmark-only dependency: it lives in its own venv, never in the project's dependencies.
#   make bench-compare BENCH_ARGS="--events 20000 --users 5000"
BENCH_VENV := .venv-bench
bench-compare: stack-up $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python bench/compare.py $(BENCH_ARGS)

$(BENCH_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q --upgrade pip
	$(BENCH_VENV)/bin/pip install -q -e . 'quixstreams==3.28.*'
	@touch $@

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build
	find streamtags -name '*.so' -delete
	rm -f streamtags/_compiled_sources.py
