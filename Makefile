# Two entry points on a fresh machine: `make demo` (the offline audit) and `make test`.
# Both build .venv once; the stamp file makes re-runs skip installs that are current.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.imgextract-installed
DEMO_DIR ?= runs/demo

.PHONY: install test demo docs bench clean browser

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch is pinned to the wheels that ship on this machine's disk (no multi-GB download).
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test,toy]'
	touch $(STAMP)

install: $(STAMP)

# The report's browser tests drive Debian's chromium through Playwright; without it they skip.
browser:
	@command -v chromium >/dev/null 2>&1 || (DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 \
	  || (apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1) \
	  || echo "chromium could not be installed: the browser tests will be skipped")

# compileall first: where PYTHONDONTWRITEBYTECODE is set (this machine), each of the suite's ~300 command-line
# calls would otherwise compile the package again before it starts (0.3 s each).
test: $(STAMP) browser
	$(PY) -m compileall -q imgextract
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=25 tests

demo: $(STAMP)
	$(VENV)/bin/imgextract demo --out $(DEMO_DIR)

# The docs site from docs/ into site/ (strict: a broken link fails; tests/test_docs.py builds it in make test).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench: $(STAMP)
	$(PY) scripts/bench_cliques.py

clean:
	rm -rf $(VENV) runs site .pytest_cache test-artifacts
