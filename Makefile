# One-command entry points: each creates or refreshes .venv, then runs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow install clean bench browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/jaxviz demo

# the suite without the long integration tests (≤ 10 minutes on a 2-core machine from a clean clone: two
# workers, one per core, each taking whole test files); CI runs both
test: $(STAMP) browser
	$(BIN)/python -m pytest -q -m "not slow" -n 2 --dist loadfile

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# Debian's headless Chromium and its driver for the atlas's browser tests (idempotent; without root or apt the
# tests that need it skip and say why)
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
	    || echo "note: chromium not installed; the browser tests will skip"; }

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) build *.egg-info
