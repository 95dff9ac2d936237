# The README's two commands: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

# Cargo builds the native executor (native/, wasmtime) outside the clone, once per machine:
# a second checkout reuses the compiled wasmtime instead of spending minutes on it again.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/wasmgate/cargo-target

NATIVE_SOURCES := native/Cargo.toml native/Cargo.lock $(wildcard native/src/*.rs) \
	bindings/wit/handler.wit $(wildcard bindings/wit-wasi-http/*.wit bindings/wit-wasi-http/deps/*/*.wit)

# Python packages come from uv.lock (every package, with hashes): a fresh machine installs
# exactly the versions the tests passed with. uv itself is bootstrapped into the venv from
# requirements/bootstrap.txt (hashed); from then on the lock keeps it (it lists uv too).
UV := $(VENV)/bin/uv
EXTRAS := --extra dev --extra brokers
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))

$(UV): requirements/bootstrap.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --no-deps --require-hashes -r requirements/bootstrap.txt
	touch $@

$(VENV)/.installed: $(UV) pyproject.toml uv.lock $(NATIVE_SOURCES)
	@command -v cargo >/dev/null 2>&1 || { echo "cargo not found: the native executor needs Rust (https://rustup.rs)"; exit 1; }
	$(UV) sync --locked $(EXTRAS) --no-install-project
	@echo "building the native executor (the first build compiles wasmtime: several minutes on 2 cores)"
	$(UV) sync --locked $(EXTRAS)
	touch $@

# The JavaScript handler toolchain (componentize-js, pinned by bindings/js/package-lock.json).
# Skipped with a note where node is absent: only JS handlers need it.
JS_TOOLCHAIN := bindings/js/node_modules/.package-lock.json
$(JS_TOOLCHAIN): bindings/js/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix bindings/js --no-audit --no-fund && touch $@; \
	else echo "npm not found: skipping bindings/js (JavaScript handlers will not build)"; fi

.PHONY: install test demo lint native-test lock lock-upgrade lock-check
install: $(VENV)/.installed $(JS_TOOLCHAIN)

test: install
	$(PY) -m pytest -q -rs -n 2

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	cargo fmt --manifest-path native/Cargo.toml --check
	cargo clippy --manifest-path native/Cargo.toml --release --all-targets -q -- -D warnings

# uv.lock after a change to pyproject.toml's dependencies: keeps every pin that still fits.
lock: $(UV)
	$(UV) lock

# Refresh uv.lock on purpose: the newest versions within pyproject.toml's ranges, and the uv
# bootstrap pin with it. Then make lint, make test and bench/ (docs/development.md).
lock-upgrade: $(UV)
	$(UV) lock --upgrade
	@ver=$$(sed -n '/^name = "uv"$$/{n;s/version = "\(.*\)"/\1/p}' uv.lock); \
	echo "uv==$$ver" | $(UV) pip compile - --generate-hashes --universal --no-header -q \
		-o requirements/bootstrap.txt

# Fails when pyproject.toml and uv.lock disagree, or when the venv differs from the lock;
# then builds a second venv from the lock and compares every installed version.
lock-check: install
	bash .ci/check-lock $(VENV)

# The Rust unit tests (limits, stderr capture); they link libpython, not the extension.
native-test:
	cargo test --manifest-path native/Cargo.toml --release -q

# Builds the demo's two Python handlers with componentize-py, then serves
# http://127.0.0.1:3000/hello while a cron job counts ticks in key-value (SQLite).
demo: install
	cd examples/demo && PATH="$(CURDIR)/$(VENV)/bin:$$PATH" wasmgate build
	cd examples/demo && PATH="$(CURDIR)/$(VENV)/bin:$$PATH" wasmgate up --listen 127.0.0.1:3000
