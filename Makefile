# `make test` and `make run` work from a fresh clone: they create .venv themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CONFIG ?= config.example.yaml
FUZZ_SECONDS ?= 300

.PHONY: venv test lint typecheck pytest run bench fuzz clean adaptive-eval

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,fuzz]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check l2tpreorder tests bench fuzz

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

# Fixed vs adaptive reorder timeout on field-shaped captures (docs/adaptive.md), ~1 minute.
adaptive-eval: $(STAMP)
	$(BIN)/python -m bench.adaptive_eval

run: $(STAMP)
	$(BIN)/l2tpreorder run --config $(CONFIG)

# Coverage-guided fuzzing of parser and engine; new corpus entries in fuzz/corpus, crashes in
# fuzz/crashes (keep each as a case in tests/core/regressions/).
fuzz: $(STAMP)
	mkdir -p fuzz/corpus fuzz/crashes
	$(BIN)/python fuzz/fuzz_engine.py -max_total_time=$(FUZZ_SECONDS) \
		-artifact_prefix=fuzz/crashes/ fuzz/corpus

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
