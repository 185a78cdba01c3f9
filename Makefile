# `make demo` and `make test` do all the set-up themselves, idempotently (README).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test test-unit demo bench clean

setup: $(STAMP)

# System packages first (BCC from Debian, kernel headers), then a venv that sees Debian's bcc.
$(STAMP): pyproject.toml scripts/install-system.sh
	bash scripts/install-system.sh --dev
	test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
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
	rm -rf $(VENV) build *.egg-info .pytest_cache
