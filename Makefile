# Two commands: `make test` and `make demo`. Each bootstraps .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo bench bench-emu lint venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/stepper demo

bench: $(STAMP)
	$(BIN)/stepper bench

bench-emu: $(STAMP)
	$(BIN)/python -m emu.bench

# The linter is a development extra, not part of `make test`.
lint: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/ruff check emu stepper tests

clean:
	rm -rf $(VENV) .hypothesis .pytest_cache build *.egg-info
