#!/usr/bin/env bash
# Reports figures, asserts nothing: one table per function (cold start, peak
# RSS, arm64 bootstrap and zip, API calls against the page-size bound, wall
# time) over an emulated world on moto, beside a boto3 peer of the prune job.
# The table also goes to target/bench/results.txt, the figures to
# target/bench/results.json.
#
# The world (defaults: a small one, a few minutes on 2 cores):
#   BENCH_REPOSITORIES=50 BENCH_IMAGES_EACH=20 BENCH_SERVICES=40 BENCH_CLUSTERS=4
# The issue's world:
#   BENCH_REPOSITORIES=10000 BENCH_IMAGES_EACH=20 BENCH_SERVICES=500 BENCH_CLUSTERS=20
# Also: BENCH_COLDSTART_RUNS (20), BENCH_SEED (1), BENCH_LAMBDA_DIR
# (target/lambda), AUTOPILOT_INVOKE_TIMEOUT_SECS (3600 here).
# Run through `make bench` (it builds the debug tools and the arm64 bootstraps).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p target/bench
echo "[bench] native release build (for representative cold start, RSS and wall time)" >&2
cargo build --release --bin log-groups --bin deploy-on-push --bin prune-images --bin quota-scan 2>&1 | tail -1 >&2
AUTOPILOT_FUNCTION_DIR=target/release \
AUTOPILOT_INVOKE_TIMEOUT_SECS="${AUTOPILOT_INVOKE_TIMEOUT_SECS:-3600}" \
  ./target/debug/bench world | tee target/bench/results.txt
