# One command sets up and runs the service, one sets up and runs the tests.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: install run test lint browser screenshots openapi bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/moncreneau run $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The browser tests drive Debian's Chromium through chromedriver: installed when missing
# and run as root; otherwise those tests skip loudly (and fail under CI=true).
browser:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium and chromium-driver for the browser tests"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq chromium chromium-driver; } >/dev/null 2>&1 \
	      || echo "could not install chromium: the browser tests will skip"; \
	  else \
	    echo "chromium or chromedriver missing (apt-get install chromium chromium-driver): the browser tests will skip"; \
	  fi; \
	fi

test: lint browser
	$(BIN)/pytest -n 2 $(ARGS)

# The portal's screenshots in the README, taken by the browser test.
screenshots: $(STAMP) browser
	MONCRENEAU_SCREENSHOTS=docs/portal $(BIN)/pytest -n 0 -q tests/browser -k subscribes

# Starts its own processes on throwaway databases; writes benchmarks/RESULTS.md and latency.png.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m benchmarks $(ARGS)

openapi: $(STAMP)
	$(BIN)/moncreneau openapi write openapi/openapi.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
