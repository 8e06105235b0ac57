# One command each: `make test` (set up + run the tests), `make book` (set up + build the book).
# Both create .venv on a fresh clone and install the package with the extras they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROFILE ?= cpu
export ALGAN_DATA ?= $(abspath ../shared/data)
NOTEBOOKS := $(wildcard notebooks/*.ipynb)

.PHONY: test book reproduce benchmark clean-book

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[test,book]"
	touch $@

# The tests write runs and CSVs into a scratch folder, never into results/.
test: $(VENV)/.installed
	@scratch=$$(mktemp -d); \
	ALGAN_RUNS=$$scratch/runs ALGAN_RESULTS=$$scratch/results MPLBACKEND=Agg \
	$(BIN)/python -m pytest tests $(NOTEBOOKS) --ignore=tests/browser --nbval-lax --nbval-current-env --durations=15 \
		-p no:cacheprovider; \
	status=$$?; rm -rf $$scratch; exit $$status
	$(MAKE) book
	$(BIN)/python -m pytest tests/browser -p no:cacheprovider   # the built book in headless Chromium

# Builds the HTML from the stored executed pages in book/: no training at build time.
book: $(VENV)/.installed
	$(BIN)/python tools/tidy_pages.py book/pages/*.ipynb
	$(BIN)/jupyter-book build . -W --keep-going
	@echo "open _build/html/index.html"

# Re-run every notebook with papermill at PROFILE (smoke, cpu or paper) into the book's pages.
reproduce: $(VENV)/.installed
	@for nb in $(NOTEBOOKS); do \
		echo "== $$nb ($(PROFILE))"; \
		$(BIN)/papermill $$nb book/pages/$$(basename $$nb) -p profile $(PROFILE) --cwd notebooks -k python3 || exit 1; \
	done
	$(BIN)/python tools/tidy_pages.py book/pages/*.ipynb

benchmark: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_algan.py
	$(BIN)/python benchmarks/bench_timing.py --profile $(PROFILE)

clean-book:
	rm -rf _build
