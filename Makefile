# `make test` and `make run` work from a fresh clone: they create .venv themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CONFIG ?= config.example.yaml

.PHONY: venv test lint typecheck pytest run bench fuzz clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check l2tpreorder tests bench

typecheck: $(STAMP)
	$(BIN)/mypy --strict l2tpreorder

pytest: $(STAMP)
	$(BIN)/pytest

test: lint typecheck pytest

# `make bench`: live loopback benchmark + engine microbenchmarks, < 5 minutes, last line is the
# headline `loss-free ratio daemon/baseline: X.XX`. Adds the optional `bench` extra (matplotlib).
BENCH_STAMP := $(VENV)/.bench-stamp
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	timeout 320 $(BIN)/python -m bench.run

run: $(STAMP)
	$(BIN)/l2tpreorder run --config $(CONFIG)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
