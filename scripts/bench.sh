#!/usr/bin/env bash
# Reports figures, asserts nothing: binary sizes, cold start, peak memory and
# API calls of a sweep. Results also go to target/bench/results.txt.
# Run through `make bench` (it builds the debug tools and the arm64 bootstraps).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p target/bench
echo "[bench] native release build (for representative cold start and RSS)" >&2
cargo build --release --bin log-groups --bin deploy-on-push --bin prune-images --bin quota-scan --bin bench 2>&1 | tail -1 >&2

# The deployment zip's size: the bootstrap alone, deflated, as `sam deploy`
# uploads it.
zipped() {
  python3 - "$1" <<'PY'
import io, sys, zipfile
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
    z.write(sys.argv[1], "bootstrap")
print(len(buf.getvalue()))
PY
}

bootstrap=target/lambda/log-groups/bootstrap
{
  echo "date: $(date -u +%FT%TZ)  machine: $(nproc) cores, $(uname -m)"
  echo "arm64 bootstraps (targets: the largest <= 5,000,000 bytes, its zip <= 2,500,000):"
  printf '  %-16s %12s %12s\n' function bootstrap zip
  for f in deploy-on-push log-groups prune-images quota-scan; do
    b=target/lambda/$f/bootstrap
    printf '  %-16s %12s %12s\n' "$f" "$(stat -c %s "$b")" "$(zipped "$b")"
  done
  echo "x86_64 release binary (log-groups): $(stat -c %s target/release/log-groups) bytes"
  echo -n "native x86_64 release: "
  ./target/debug/bench coldstart 30 target/release/log-groups
  echo -n "arm64 bootstrap under qemu-aarch64 (emulated, slower than real Graviton): "
  ./target/debug/bench coldstart 10 /usr/bin/qemu-aarch64-static -L /usr/aarch64-linux-gnu "$bootstrap"
  AUTOPILOT_FUNCTION_DIR=target/release ./target/debug/bench sweep 3 40
  echo -n "deploy-on-push native x86_64 release: "
  ./target/debug/bench coldstart 30 target/release/deploy-on-push
  AUTOPILOT_FUNCTION_DIR=target/release ./target/debug/bench push 3 40
  ./target/release/bench planner 100000
  AUTOPILOT_FUNCTION_DIR=target/release ./target/debug/bench prune "${BENCH_PRUNE_IMAGES:-10000}"
  AUTOPILOT_FUNCTION_DIR=target/release ./target/debug/bench quota "${BENCH_QUOTA_REPOSITORIES:-1000}" 20
} | tee target/bench/results.txt
