# The README's two commands: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

# Cargo builds the native executor (native/, wasmtime) outside the clone, once per machine:
# a second checkout reuses the compiled wasmtime instead of spending minutes on it again.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/wasmgate/cargo-target

NATIVE_SOURCES := native/Cargo.toml native/Cargo.lock $(wildcard native/src/*.rs) \
	bindings/wit/handler.wit $(wildcard bindings/wit-wasi-http/*.wit bindings/wit-wasi-http/deps/*/*.wit)

$(VENV)/.installed: pyproject.toml $(NATIVE_SOURCES)
	@command -v cargo >/dev/null 2>&1 || { echo "cargo not found: the native executor needs Rust (https://rustup.rs)"; exit 1; }
	test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	@echo "building the native executor (the first build compiles wasmtime: several minutes on 2 cores)"
	$(VENV)/bin/pip install -q -e '.[dev,brokers]'
	touch $@

# The JavaScript handler toolchain (componentize-js, pinned by bindings/js/package-lock.json).
# Skipped with a note where node is absent: only JS handlers need it.
JS_TOOLCHAIN := bindings/js/node_modules/.package-lock.json
$(JS_TOOLCHAIN): bindings/js/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix bindings/js --no-audit --no-fund && touch $@; \
	else echo "npm not found: skipping bindings/js (JavaScript handlers will not build)"; fi

.PHONY: install test demo lint native-test
install: $(VENV)/.installed $(JS_TOOLCHAIN)

test: install
	$(PY) -m pytest -q -rs -n 2

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	cargo fmt --manifest-path native/Cargo.toml --check
	cargo clippy --manifest-path native/Cargo.toml --release --all-targets -q -- -D warnings

# The Rust unit tests (limits, stderr capture); they link libpython, not the extension.
native-test:
	cargo test --manifest-path native/Cargo.toml --release -q

# Builds the demo's two Python handlers with componentize-py, then serves
# http://127.0.0.1:3000/hello while a cron job counts ticks in key-value (SQLite).
demo: install
	cd examples/demo && PATH="$(CURDIR)/$(VENV)/bin:$$PATH" wasmgate build
	cd examples/demo && PATH="$(CURDIR)/$(VENV)/bin:$$PATH" wasmgate up --listen 127.0.0.1:3000
