# The one test command: `make test` runs every test (Rust, the README's
# quickstart as printed, and browser).
.PHONY: test deps

test: deps
	cargo build --workspace --locked
	cargo test --workspace --locked
	bash scripts/quickstart.sh
	cd client && npm ci --no-audit --no-fund && SKEWLESS_BIN=$(CURDIR)/target/debug/skewless npm test

deps:
	bash scripts/install-test-deps.sh
