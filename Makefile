# The two commands a clean machine needs: `make demo` and `make test`; and
# `make deploy` for an AWS account. Everything else here is what they are made of.

SHELL := /bin/bash
VENV ?= $(HOME)/.cache/ecr-autopilot/venv
export AUTOPILOT_VENV := $(VENV)
export PATH := $(VENV)/bin:$(PATH)
export SAM_CLI_TELEMETRY := 0
FUNCTIONS := deploy-on-push log-groups prune-images quota-scan

.PHONY: setup build arm64 check-arm64 sam-build deploy demo test unit e2e bench bench-cycle lint faults

setup:
	bash scripts/setup.sh

# One debug build of every target (binaries, tests, the demo): building them
# together unifies dev-dependency features, so `cargo test` reuses it all.
build: setup
	cargo build --workspace --all-targets

# The deployable artefacts: target/lambda/<function>/bootstrap, aarch64 ELF.
# One package per build (`-p`): Cargo unifies the shared crate's features over
# every package a command selects, so a single build of all four would link
# every function against every SDK client (README, "Binary size").
arm64: setup
	@for f in $(FUNCTIONS); do \
		echo "cargo lambda build --release --arm64 -p $$f"; \
		cargo lambda build --release --arm64 -p $$f || exit 1; \
	done
	$(MAKE) --no-print-directory check-arm64

check-arm64:
	@for f in $(FUNCTIONS); do scripts/check-arm64.sh target/lambda/$$f/bootstrap || exit 1; done

# `sam build` builds in the source tree, in each function's own directory
# (its CodeUri, functions/<function>), with `cargo lambda build --release
# --arm64 --bin <function>` (SAM's rust-cargolambda method): from a member's
# directory Cargo selects that package alone, as `-p` does, so the features and
# the binary are the same as `make arm64`'s, and it reuses the workspace's
# target/ and what `make arm64` compiled, then copies each bootstrap into
# .aws-sam/build/.
sam-build: arm64
	sam build

# The first time (no region saved in samconfig.toml yet) the guided deploy
# asks for the stack name, region and parameters and saves them; later runs
# deploy with the saved answers. `make deploy GUIDED=1` asks again.
deploy: sam-build
	@if [ -z "$(GUIDED)" ] && grep -Eq '^[[:space:]]*region[[:space:]]*=' samconfig.toml; then \
		echo "sam deploy (answers from samconfig.toml)"; sam deploy; \
	else \
		echo "sam deploy --guided (first deploy: answers are saved to samconfig.toml)"; sam deploy --guided; \
	fi

demo: build
	./target/debug/demo $(DEMO_ARGS)

# Every test: unit, adapter (aws-smithy-mocks), end to end on moto through
# cargo-lambda's Runtime API, the template, the arm64 bootstrap under qemu,
# and `sam build` (so a broken build configuration fails here, not at deploy).
test: build lint arm64 sam-build
	AUTOPILOT_ARM64_BOOTSTRAP_DIR=$(CURDIR)/target/lambda cargo test --workspace --no-fail-fast

# The full fault matrix: every AWS operation each function calls × every
# fault × {first call, every call}. About 2 h; `make test` runs a reduced one.
faults: build
	FAULT_MATRIX=full cargo test --workspace --test faults fault_matrix -- --test-threads=1

# Lint is part of the tests: formatting, and clippy with every warning an error.
lint: setup
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

# One table per function over a world on moto, beside a boto3 peer of the
# prune job; JSON in target/bench/results.json. The world's size comes from
# BENCH_REPOSITORIES, BENCH_IMAGES_EACH, BENCH_SERVICES, BENCH_CLUSTERS
# (scripts/bench.sh lists them and their small defaults).
bench: build arm64
	bash scripts/bench.sh

# One prune-images cycle fanned out over a work queue (README, "Benchmarks").
bench-cycle: build
	AUTOPILOT_INVOKE_TIMEOUT_SECS=$${AUTOPILOT_INVOKE_TIMEOUT_SECS:-3600} ./target/debug/bench cycle
