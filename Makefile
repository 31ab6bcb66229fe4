# The two set-up commands of the README. Each installs what it needs.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
EXTRAS ?= dev,flower,ray

.PHONY: install demo test test-slow lint

install:
	$(PIP) install torch==2.13.0
	$(PIP) install -e ".[$(EXTRAS)]"

demo: install
	fedpoison demo

test: install
	$(PYTHON) -m pytest

test-slow: install
	$(PYTHON) -m pytest -m slow

lint:
	$(PYTHON) -m ruff check src tests benchmarks examples
	$(PYTHON) -m mypy src
