# The README's two commands: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev,brokers]'
	touch $@

.PHONY: install test demo lint
install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Builds the demo's two Python handlers with componentize-py, then serves
# http://127.0.0.1:3000/hello while a cron job counts ticks in key-value (SQLite).
demo: install
	cd examples/demo && PATH="$(CURDIR)/$(VENV)/bin:$$PATH" wasmgate build
	cd examples/demo && PATH="$(CURDIR)/$(VENV)/bin:$$PATH" wasmgate up --listen 127.0.0.1:3000
