# The README's two commands: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev,brokers]'
	touch $@

# The JavaScript handler toolchain (componentize-js, pinned by bindings/js/package-lock.json).
# Skipped with a note where node is absent: only JS handlers need it.
JS_TOOLCHAIN := bindings/js/node_modules/.package-lock.json
$(JS_TOOLCHAIN): bindings/js/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix bindings/js --no-audit --no-fund && touch $@; \
	else echo "npm not found: skipping bindings/js (JavaScript handlers will not build)"; fi

.PHONY: install test demo lint
install: $(VENV)/.installed $(JS_TOOLCHAIN)

test: install
	$(PY) -m pytest -q -rs

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Builds the demo's two Python handlers with componentize-py, then serves
# http://127.0.0.1:3000/hello while a cron job counts ticks in key-value (SQLite).
demo: install
	cd examples/demo && PATH="$(CURDIR)/$(VENV)/bin:$$PATH" wasmgate build
	cd examples/demo && PATH="$(CURDIR)/$(VENV)/bin:$$PATH" wasmgate up --listen 127.0.0.1:3000
