# The two commands (the README's `./dev test` and `./dev demo` install make
# and a C compiler when missing, then run these):
#   make test   install what is missing, then ruff, mypy, and the whole pytest
#               suite twice: with the compiled extensions, and with
#               SFU_NO_EXTENSIONS=1 (the pure-Python twins; this run
#               deselects the tests marked compiled_and_python_alike, which
#               reach nothing it selects: tests/alike.py), the second on
#               uvloop (SFU_TEST_LOOP=uvloop: the demo serves on it), the
#               first on asyncio's own loop. Fails if any fails.
#   make demo   install what is missing, then run the demo server ($(DEMO)).
#
# Both install the Debian packages they need when missing (the tests: a browser,
# GStreamer, speech...; the demo: only what builds the venv), as root with
# apt-get; otherwise they print what to install and go on (the tests that need
# a package skip, naming it). Both create .venv with the python3 on
# PATH and `pip install -e '.[test]'` into it, which compiles sfu/*.pyx in
# place. Stamp files keep a second run fast; editing pyproject.toml, setup.py
# or a .pyx reinstalls/recompiles. `make build` forces it.
#
# Variables: PYTHON (interpreter for the venv), VENV, DEMO, DEMO_ARGS (e.g.
# ./dev demo DEMO_ARGS='--port 9000'), PYTEST_ARGS
# (e.g. make test PYTEST_ARGS='-x -k relay').

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
DEMO ?= examples/demo_server.py
PYTEST_ARGS ?=
DEMO_ARGS ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.sfu-installed
PYX := $(wildcard sfu/*.pyx sfu/*/*.pyx)

# Same list as [build-system] requires in pyproject.toml (tests/test_packaging.py
# checks it): pip builds with --no-build-isolation, in the venv itself, so a
# changed .pyx recompiles in seconds without a fresh build environment.
BUILD_REQUIRES := 'setuptools>=64' 'wheel' 'Cython>=3.0' 'numpy>=1.26'

# Debian's own python3 needs these to make a venv and compile the extensions
# (a pyenv or other self-built Python brings its own): all the demo needs.
DEMO_APT_PACKAGES :=
ifeq ($(shell $(PYTHON) -c 'import sys; print(sys.base_prefix)' 2>/dev/null),/usr)
DEMO_APT_PACKAGES += python3-venv python3-dev gcc
endif
TEST_APT_PACKAGES := $(DEMO_APT_PACKAGES) chromium espeak-ng sox iproute2 nodejs \
	gstreamer1.0-plugins-bad gstreamer1.0-nice gstreamer1.0-plugins-good \
	gstreamer1.0-plugins-base gstreamer1.0-tools python3-gi \
	gir1.2-gst-plugins-bad-1.0 gir1.2-gst-plugins-base-1.0 gir1.2-gstreamer-1.0
# What `system-packages` checks: the tests' unless a target says otherwise
# (a target-specific value holds for its prerequisites too).
APT_PACKAGES = $(TEST_APT_PACKAGES)
demo: APT_PACKAGES = $(DEMO_APT_PACKAGES)

.PHONY: help test demo build lint typecheck system-packages clean distclean

help:
	@echo "make test   # install what is missing; ruff, mypy, pytest with and without extensions"
	@echo "make demo   # install what is missing; run $(DEMO)"
	@echo "make build  # recompile the Cython extensions in place"
	@echo "make clean / distclean"

test: system-packages $(STAMP)
	@status=0; failed=""; \
	echo "== ruff check sfu tests"; \
	$(BIN)/ruff check sfu tests || { status=1; failed="$$failed ruff"; }; \
	echo "== mypy"; \
	$(BIN)/mypy || { status=1; failed="$$failed mypy"; }; \
	echo "== pytest (compiled extensions)"; \
	env -u SFU_NO_EXTENSIONS $(BIN)/python -m pytest $(PYTEST_ARGS) || { status=1; failed="$$failed pytest"; }; \
	echo "== pytest (SFU_NO_EXTENSIONS=1, on uvloop)"; \
	SFU_NO_EXTENSIONS=1 SFU_TEST_LOOP=uvloop $(BIN)/python -m pytest $(PYTEST_ARGS) || { status=1; failed="$$failed pytest-no-extensions-uvloop"; }; \
	if [ $$status -ne 0 ]; then echo "make test: FAILED:$$failed" >&2; fi; \
	exit $$status

demo: system-packages $(STAMP)
	$(BIN)/python $(DEMO) $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check sfu tests

typecheck: $(STAMP)
	$(BIN)/mypy

build:
	rm -f $(STAMP)
	$(MAKE) --no-print-directory $(STAMP)

# The venv, its dependencies and the compiled extensions (in place, beside
# the .pyx). A failed compile does not stop the install (setup.py falls back
# to the Python twins); it is reported here and fails tests/test_packaging.py.
$(STAMP): pyproject.toml setup.py $(PYX)
	@# (A venv without a working pip: made before python3-venv was installed,
	@# or by a Python since removed. It would fail every run: made again.)
	@if ! $(BIN)/python -m pip --version >/dev/null 2>&1; then \
	  if [ -e $(VENV) ]; then echo "make: $(VENV) has no working python or pip: making it again"; rm -rf $(VENV); fi; \
	  echo "make: creating $(VENV) with $$(command -v $(PYTHON))"; \
	  $(PYTHON) -m venv $(VENV); \
	fi
	$(BIN)/python -m pip install --quiet $(BUILD_REQUIRES)
	$(BIN)/python -m pip install --quiet --no-build-isolation -e '.[test]'
	@suffix=$$($(BIN)/python -c 'import importlib.machinery as m; print(m.EXTENSION_SUFFIXES[0])'); \
	for pyx in $(PYX); do \
	  so="$${pyx%.pyx}$$suffix"; \
	  if [ "$$so" -nt "$$pyx" ]; then echo "make: compiled $$so"; \
	  else echo "make: WARNING: $$pyx did not compile (the pure-Python twin will be used); see: $(BIN)/python -m pip install -v --no-build-isolation --no-deps -e ." >&2; fi; \
	done
	@touch $@

# Debian packages for the browser, speech, network-namespace and GStreamer
# tests (for the demo, only its own). Checked every run (dpkg-query is fast);
# apt-get only when one is missing.
system-packages:
	@if [ -z "$(strip $(APT_PACKAGES))" ]; then exit 0; fi; \
	if ! command -v dpkg-query >/dev/null 2>&1; then \
	  echo "make: not a Debian system: install the equivalents of: $(APT_PACKAGES)"; \
	  exit 0; \
	fi; \
	missing=""; \
	for pkg in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' "$$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$pkg"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "make: installing Debian packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get -o DPkg::Lock::Timeout=600 update -q && \
	  apt-get -o DPkg::Lock::Timeout=600 install -y -q $$missing; \
	else \
	  echo "make: missing Debian packages (the tests that need them will skip): apt-get install$$missing"; \
	fi

clean:
	rm -rf build sfu/build sfu/*.egg-info *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find sfu -name '*.so' -delete
	@for pyx in $(PYX); do rm -f "$${pyx%.pyx}.c" "$${pyx%.pyx}.html"; done
	rm -f $(STAMP)

distclean: clean
	rm -rf $(VENV)
