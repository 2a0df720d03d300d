# anklume Live OS — top-level commands. See README.md.

.PHONY: all build test bench sync-bench clean

all: build

## Build every crate (release).
build:
	bash ci/setup
	cargo build --workspace --release --locked

## The test command: set-up, fmt, clippy -D warnings, all tests.
test:
	bash ci/test

## Benchmarks (figures printed; nothing asserted).
bench:
	cargo bench -p anklume --bench sync

clean:
	cargo clean
