# Two commands do all the set-up on a fresh clone:
#   make run    creates .venv if missing, installs prunescope (with the dev, ray, vision and hf extras), opens the app on a demo model
#   make test   the same install, then the whole test suite (unit, app, CLI, e2e browser)
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PORT    ?= 8501

.PHONY: run test install bench gpu-check train clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev,ray,vision,hf]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/prunescope app --port $(PORT)

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# On a machine with a CUDA GPU: every `cuda` test, then the GPU benchmarks; writes
# benchmarks/results/gpu-<date>.json and docs/gpu.md (says so and does nothing without a GPU)
gpu-check: $(STAMP)
	$(BIN)/python -m benchmarks.gpu_check

train: $(STAMP)
	$(BIN)/python -m demo_models.train

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
