# framecast: the two commands a newcomer needs.
#   make demo   install, then train and propagate an edit on the built-in model through the real server
#   make test   install, then run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

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

test: $(STAMP)
	TRITON_INTERPRET=1 $(BIN)/pytest

proto: $(STAMP)
	$(BIN)/python proto/generate.py

clean:
	rm -rf $(VENV) demo-out build *.egg-info
