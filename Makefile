# NOTE (helper C, issue 3): this file briefly held the lead's targets (install/demo/test) and was
# overwritten by mistake while adding the bench targets. install/demo/test below are a
# reconstruction from README.md and .ci/run -- lead, please check them against your version.
PYTHON ?= python3
VENV ?= .venv

.PHONY: install demo test bench-sentiment bench-tickets

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

install: $(VENV)/bin/python
	$(VENV)/bin/pip install -e '.[test,bench,parquet]'
	PYTHON=$(VENV)/bin/python scripts/install-llama.sh
	$(VENV)/bin/speculabel models pull all

demo: install
	$(VENV)/bin/speculabel demo

test: install
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest

# ---- benchmarks of the paper's two tasks on real data (../shared/data). Override e.g. N=100.

SPECULABEL ?= $(if $(wildcard $(VENV)/bin/speculabel),$(VENV)/bin/speculabel,speculabel)
N ?= 500
MEASURE ?= 100
BENCH_ARGS ?=

# TweetEval sentiment (test split): the four catalogue models plus the VADER lexicon as a
# cheap non-LLM worker; qwen2.5-1.5b judges.
bench-sentiment:
	$(SPECULABEL) bench --dataset tweeteval --split test --task sentiment \
	  --models smollm2-135m,gemma3-270m,qwen2.5-0.5b,vader,qwen2.5-1.5b --judge qwen2.5-1.5b \
	  --limit $(N) --measure-items $(MEASURE) --out bench-out/sentiment --skip-missing-data $(BENCH_ARGS)

# Similar ticket: Banking77 test pairs (half similar, a quarter of the negatives hard, seed 0).
bench-tickets:
	$(SPECULABEL) bench --dataset banking77-pairs --split test --seed 0 --task similar-ticket \
	  --models smollm2-135m,gemma3-270m,qwen2.5-0.5b,qwen2.5-1.5b --judge qwen2.5-1.5b \
	  --limit $(N) --measure-items $(MEASURE) --out bench-out/tickets --skip-missing-data $(BENCH_ARGS)
