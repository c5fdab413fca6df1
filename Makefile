# `make test` and `make run` work from a fresh clone: they create .venv themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# `make run`: a relay reachable from loopback only (config.demo.yaml); another file: CONFIG=FILE.
CONFIG ?= config.demo.yaml
FUZZ_SECONDS ?= 300

.PHONY: venv test lint typecheck pytest pytest-pure run bench soak fuzz clean adaptive-eval deb man

# `plot` (matplotlib and numpy: 12 s more on a first install here) so that the suite draws and
# reads back the `replay pcap --plot` picture; under CI=true its test fails without it.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,fuzz,plot]'
	touch $(STAMP)

# The compiled hot path (issue 23, l2tpreorder/build.py): mypyc compiles the per-packet modules
# into l2tpreorder/_compiled/ when a C compiler and Python headers are there (40-75 s on the shared
# 2-core VM), else it notes why and the daemon runs pure. Rebuilt when a compiled module's source
# changes (a stale build is never used: the manifest holds the sources' digests).
COMPILED_SRC   := $(wildcard l2tpreorder/core/*.py) l2tpreorder/daemon/inpath/adapter.py \
                  l2tpreorder/daemon/inpath/nfqueue.py l2tpreorder/daemon/inpath/verdicts.py \
                  l2tpreorder/build.py l2tpreorder/mypyc_build.py \
                  l2tpreorder/config/values.py l2tpreorder/daemon/inpath/errors.py \
                  l2tpreorder/daemon/mmsg.py
COMPILED_STAMP := l2tpreorder/_compiled/.stamp
$(COMPILED_STAMP): $(STAMP) $(COMPILED_SRC)
	$(BIN)/python -m l2tpreorder.mypyc_build
	touch $(COMPILED_STAMP)

venv: $(STAMP) $(COMPILED_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check l2tpreorder tests bench fuzz man

typecheck: $(STAMP)
	$(BIN)/mypy --strict l2tpreorder

# The suite runs in TEST_WORKERS processes (pytest-xdist), a test file to a process (module
# fixtures such as an xl2tpd lab or a booted container are set up once); every test makes its own
# namespaces (named with the pid) and ports, so they do not meet. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
pytest: $(STAMP) $(COMPILED_STAMP)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

# The suite above runs the compiled build (when built); the pure modules keep their own run of
# the core property and equivalence tests (same source, interpreted).
pytest-pure: $(STAMP)
	L2TPREORDER_BUILD=pure $(BIN)/pytest -q -n $(TEST_WORKERS) tests/core \
		-k "propert or equivalence or inline_parse"

test: lint typecheck pytest pytest-pure

# `make bench`: live loopback benchmark + engine microbenchmarks, < 8 minutes, last line is the
# headline `loss-free ratio daemon/baseline: X.XX`. Its plot's matplotlib (the `bench` extra,
# which is `plot`) comes with the venv. Builds bench/c (C load generator, C NFQUEUE reader) with
# gcc when there (docs/performance.md).
bench: $(STAMP) $(COMPILED_STAMP)
	timeout 450 $(BIN)/python -m bench.run

# 15 minutes of session churn at 10k datagrams/s through the real relay; RSS after warm-up
# (docs/sessions.md). Exit status 1 on any order violation or accounting mismatch.
soak: $(STAMP)
	$(BIN)/python -m bench.soak --seconds 900 --rate 10000

# Fixed vs adaptive reorder timeout on field-shaped captures (docs/adaptive.md), ~1 minute.
adaptive-eval: $(STAMP)
	$(BIN)/python -m bench.adaptive_eval

# Prints the config's `#>` lines (what it is, what to try next), then runs it in the foreground.
run: $(STAMP) $(COMPILED_STAMP)
	@sed -n 's/^#> \{0,1\}//p' $(CONFIG)
	$(BIN)/l2tpreorder run --config $(CONFIG)

# man/l2tpreorder.yaml.5 from the settings table and config.example.yaml's comments
# (tests/test_config_manpage.py fails while it is out of date).
man: $(STAMP)
	$(BIN)/python man/config_page.py

# Coverage-guided fuzzing of parser and engine; new corpus entries in fuzz/corpus, crashes in
# fuzz/crashes (keep each as a case in tests/core/regressions/).
fuzz: $(STAMP)
	mkdir -p fuzz/corpus fuzz/crashes
	$(BIN)/python fuzz/fuzz_engine.py -max_total_time=$(FUZZ_SECONDS) \
		-artifact_prefix=fuzz/crashes/ fuzz/corpus

# `make deb`: l2tpreorder_<version>_all.deb here, built with Debian's tooling (debian/, dh +
# pybuild) in a temporary copy of the tree (tracked and new files, not ignored ones), so the
# source tree stays clean. Build-deps: .ci/apt-packages.txt. See docs/deployment.md.
# Debian's own python3 (and pybuild's modules), not a pyenv/venv python earlier on PATH.
DEB_PATH := /usr/sbin:/usr/bin:/sbin:/bin
DEB_VERSION := $(shell dpkg-parsechangelog -S Version 2>/dev/null)
DEB_OUT ?= .
deb:
	@test -n "$(DEB_VERSION)" || { echo "make deb: dpkg-parsechangelog (dpkg-dev) is missing"; exit 2; }
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	mkdir "$$tmp/src"; \
	git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$$tmp/src"; \
	(cd "$$tmp/src" && env PATH=$(DEB_PATH) dpkg-buildpackage -us -uc -b >"$$tmp/build.log" 2>&1) \
		|| { tail -40 "$$tmp/build.log"; exit 1; }; \
	cp "$$tmp/l2tpreorder_$(DEB_VERSION)_all.deb" $(DEB_OUT)/
	@echo "built $(DEB_OUT)/l2tpreorder_$(DEB_VERSION)_all.deb"

clean:
	rm -rf $(VENV) l2tpreorder/_compiled .pytest_cache .mypy_cache .ruff_cache .hypothesis
