# One virtual environment, torch first. torch==2.13.0 is the CPU build on machines whose pip offers one (CI's); on a
# Linux PC PyPI's torch is the CUDA build (right for a GPU). A CPU-only PC without a local wheel:
#   make install TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
JOBS   ?= auto

.PHONY: test demo docs install clean x11-for-tests chromium-for-tests

# Two install profiles in one venv, each a marker file: the run-time with torch (what `make demo` needs: export and
# run), then the dev set on top (tests, docs, Ray, ROS 2, TensorRT for RTX; about 2.4 GB) for `make test`/`make docs`.
# pip byte-compiles what it installs, but not this checkout (an editable install): compileall does, once, so that a
# `smoothdino` process does not compile the package again each time it starts where PYTHONDONTWRITEBYTECODE is set
# (as on this machine): 0.25 s a process, and the test suite starts hundreds. An edited file is compiled afresh, as always.
$(VENV)/.runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[torch]"
	$(BIN)/python -m compileall -q -j 0 *.py models export calibration edge core benchmarks
	touch $@

$(VENV)/.dev: $(VENV)/.runtime
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.dev

# Two phases (tests/conftest.py says why): every test not marked `alone` on all cores (pytest-xdist, a module a
# worker), then the `alone` ones, which compare rates and latencies with the wall clock, one at a time.
test: install x11-for-tests chromium-for-tests
	$(BIN)/python -m pytest -q -n $(JOBS) --dist loadfile --no-loadscope-reorder -m "not alone" --durations=25
	$(BIN)/python -m pytest -q -m alone --durations=5

# tests/test_window.py runs `live` with its window on Xvfb with a window manager (openbox; without one, Qt's window
# sometimes never painted). Best effort: installed only where either is missing, apt-get exists and we are root;
# never fails the build (the test skips, saying why).
x11-for-tests:
	@{ command -v Xvfb && command -v openbox; } >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		(DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb openbox >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb openbox) >/dev/null 2>&1) \
		|| echo "note: Xvfb or openbox not installed; tests/test_window.py will skip"; } || true

# tests/test_web_view.py drives `live --serve` in Debian's headless Chromium (Playwright with executable_path: no
# browser download). Best effort as for Xvfb: chromium-headless-shell (Debian 12+), else chromium; never fails.
chromium-for-tests:
	@command -v chromium-headless-shell >/dev/null 2>&1 || command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		(apt-get update -qq && { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium-headless-shell || \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }) >/dev/null 2>&1 \
		|| echo "note: Chromium not installed; tests/test_web_view.py will skip"; } || true

demo: $(VENV)/.runtime
	$(BIN)/smoothdino demo --out out/demo

# The docs site (mkdocs.yml, docs/): strict, so a broken link, a missing page or a missing figure record fails.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) out site *.egg-info
