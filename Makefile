# framecast: the two commands a newcomer needs.
#   make demo   install, then train and propagate an edit on the built-in model through the real server
#   make test   install (and Debian's chromium for the studio's browser tests), then run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The studio's browser tests drive the system's Chromium (Debian's package): Playwright downloads no browser.
CHROMIUM := /usr/bin/chromium

.PHONY: install demo test proto clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# Pinned: an unpinned torch would pull the CUDA build and its GB of libraries.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[server,test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/framecast demo --out demo-out

$(CHROMIUM):
	if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium

test: $(STAMP) $(CHROMIUM)
	TRITON_INTERPRET=1 $(BIN)/pytest

proto: $(STAMP)
	$(BIN)/python proto/generate.py

clean:
	rm -rf $(VENV) demo-out build *.egg-info
