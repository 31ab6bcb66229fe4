# The README's set-up commands. Each creates .venv (once) and installs what it needs into it,
# so nothing is installed into the system Python.
#
#   make demo    core dependencies only (CPU torch wheel), then `fedpoison demo`
#   make test    + the test extras (dev), then the default test suite
#   make docs    + the docs extra, then a strict build of the API reference into site/
#
# Variables: SYSTEM_PYTHON (the interpreter that creates the venv, default python3),
# VENV (default .venv), TEST_EXTRAS (default dev; CI adds flower,ray so those tests run too).
SYSTEM_PYTHON ?= python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python
PIP := $(PYTHON) -m pip
TEST_EXTRAS ?= dev
comma := ,
TEST_STAMP := $(VENV)/.test-$(subst $(comma),-,$(TEST_EXTRAS))

.PHONY: venv core demo test test-slow docs lint clean-venv

# Create the venv. Debian and Ubuntu ship venv's pip bootstrap (ensurepip) in a separate package;
# without it `python3 -m venv` leaves a venv with no pip, which is removed again with a hint.
$(PYTHON):
	@$(SYSTEM_PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "fedpoison needs Python 3.11 or newer; $(SYSTEM_PYTHON) is $$($(SYSTEM_PYTHON) -V 2>&1)." \
		       "Set SYSTEM_PYTHON=python3.11 (or newer)."; exit 1; }
	@$(SYSTEM_PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
		echo ""; echo "Could not create $(VENV): this Python has no venv/ensurepip module."; \
		echo "On Debian or Ubuntu: sudo apt-get install python3-venv   (then run make again)"; exit 1; }

venv: $(PYTHON)

# Core dependencies: the CPU torch wheel first (so pip does not pick a CUDA build), then fedpoison.
$(VENV)/.core: pyproject.toml | $(PYTHON)
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e .
	@touch $@

$(TEST_STAMP): pyproject.toml $(VENV)/.core
	$(PIP) install --quiet -e ".[$(TEST_EXTRAS)]"
	@touch $@

$(VENV)/.docs: pyproject.toml $(VENV)/.core
	$(PIP) install --quiet -e ".[docs]"
	@touch $@

core: $(VENV)/.core

demo: $(VENV)/.core
	$(PYTHON) -m fedpoison demo

test: $(TEST_STAMP)
	$(PYTHON) -m pytest

test-slow: $(TEST_STAMP)
	$(PYTHON) -m pytest -m slow

docs: $(VENV)/.docs
	$(PYTHON) -m mkdocs build --strict --site-dir site

lint: $(TEST_STAMP)
	$(PYTHON) -m ruff check src tests benchmarks examples
	$(PYTHON) -m mypy src

clean-venv:
	rm -rf $(VENV)
