# Every target creates or reuses .venv and installs the project, so each works first on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint install clean browser screenshots

# Charts label villages in Chinese: a CJK font from Debian's archive (gateway/fonts.py finds it; set
# FEDGATE_PLOT_FONT to use another font file instead).
CJK_FONT := /usr/share/fonts/truetype/wqy/wqy-microhei.ttc
SUDO := $(shell test "$$(id -u)" -eq 0 || echo sudo)

$(CJK_FONT):
	$(SUDO) apt-get install -y --no-install-recommends fonts-wqy-microhei || \
	  ($(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends fonts-wqy-microhei)

$(STAMP): pyproject.toml | $(CJK_FONT)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/fedgate demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Two workers, one test file each at a time: a file's module fixtures (a county, a federation, a browser, a
# Spark session) are built once. A third worker on two cores was slower, not faster.
PYTEST_WORKERS ?= 2

# The console's browser tests drive Debian's Chromium through Playwright (which never downloads a browser
# here); a fresh machine (CI runs as root) gets the package first.
CHROMIUM ?= /usr/bin/chromium

$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

browser: $(CHROMIUM)

test: lint browser
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadfile --durations=15

# Screenshots of the console's main pages into docs/console/ (the browser tests write them).
screenshots: $(STAMP) browser
	FEDGATE_SCREENSHOTS=1 $(BIN)/pytest -q -p no:randomly tests/test_console_browser.py tests/test_console_roles_browser.py

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]' && $(BIN)/python -m bench

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache
