# One virtual environment, torch's CPU build first (a bare `torch` would pull a multi-GB CUDA build).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0

.PHONY: test demo install clean

$(BIN)/smoothdino: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/smoothdino

test: install
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/smoothdino demo --out out/demo

clean:
	rm -rf $(VENV) out *.egg-info
