# `make demo` and `make test` do all the set-up themselves, idempotently (README).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FOCUS_VENV ?= .venv-focus
FOCUS_STAMP := $(FOCUS_VENV)/.installed

.PHONY: setup test test-unit demo bench clean

setup: $(STAMP) $(FOCUS_STAMP)

# System packages first (BCC from Debian, kernel headers), then a venv that sees Debian's bcc.
$(STAMP): pyproject.toml scripts/install-system.sh
	bash scripts/install-system.sh --dev
	test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

# The FOCUS validator (a test tool needing Python 3.12) in a venv of its own.
$(FOCUS_STAMP): scripts/install-focus-validator.sh
	bash scripts/install-focus-validator.sh $(FOCUS_VENV)
	touch $@

test: setup
	$(PY) -m pytest

test-unit: setup
	$(PY) -m pytest tests/unit

demo: setup
	$(PY) -m demo

bench: setup
	$(PY) -m bench

clean:
	rm -rf $(VENV) $(FOCUS_VENV) build *.egg-info .pytest_cache
