# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv and installs
# the pinned requirements first (once; again when requirements.txt or pyproject.toml change).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The run must leave no stray files in the repository, bytecode caches included.
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: demo test data clean-venv

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -e .
	touch $(STAMP)

demo: $(STAMP)  ## run the notebook on the embedded default into a new submission_runs/ folder
	$(PY) -m lib.execute --params params/embedded.yaml

test: $(STAMP)  ## the whole test suite (units, the notebook through papermill, nbval)
	$(PY) -m pytest

data: $(STAMP)  ## regenerate data/ (deterministic: the result equals the committed files)
	$(PY) -m lib.datagen

clean-venv:
	rm -rf $(VENV)
