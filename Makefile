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

demo: install
	@echo "The demo app (HTTP + cron + key-value) lands with issue #2's executor and HTTP"
	@echo "trigger; it is not in this checkout yet. See README.md, 'Status'."
	@exit 1
