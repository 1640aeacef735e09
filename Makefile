# One virtual environment, torch's CPU build first (a bare `torch` would pull a multi-GB CUDA build).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0

.PHONY: test demo install clean x11-for-tests chromium-for-tests

$(BIN)/smoothdino: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/smoothdino

test: install x11-for-tests chromium-for-tests
	$(BIN)/python -m pytest -q

# tests/test_window.py runs `live` with its window under Xvfb. Best effort: installed only where Xvfb is
# missing, apt-get exists and we are root; never fails the build (the test skips, saying why).
x11-for-tests:
	@command -v Xvfb >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		(DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb) >/dev/null 2>&1) \
		|| echo "note: Xvfb not installed; tests/test_window.py will skip"; } || true

# tests/test_web_view.py drives `live --serve` in Debian's headless Chromium (Playwright with executable_path: no
# browser download). Best effort as for Xvfb: chromium-headless-shell (Debian 12+), else chromium; never fails.
chromium-for-tests:
	@command -v chromium-headless-shell >/dev/null 2>&1 || command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		(apt-get update -qq && { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium-headless-shell || \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }) >/dev/null 2>&1 \
		|| echo "note: Chromium not installed; tests/test_web_view.py will skip"; } || true

demo: install
	$(BIN)/smoothdino demo --out out/demo

clean:
	rm -rf $(VENV) out *.egg-info
