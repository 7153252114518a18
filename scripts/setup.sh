#!/usr/bin/env bash
# Installs every tool the demo, the tests and the arm64 build need, on a clean
# Debian machine with rustup. Idempotent: a second run only checks.
#
# Tools live in one fixed virtualenv (AUTOPILOT_VENV) because cargo-lambda finds
# zig through `python3 -m ziglang`; moving the venv changes zig's path and forces
# a full rebuild of the arm64 target.
set -euo pipefail

VENV="${AUTOPILOT_VENV:-$HOME/.cache/ecr-autopilot/venv}"
STAMP="$VENV/.autopilot-tools-v1"

PY_PACKAGES=(
  "moto[server]==5.2.5"
  "cargo-lambda==1.9.2"
  "ziglang==0.13.0.post1"
  "aws-sam-cli==1.170.0"
  "cfn-lint==1.58.0"
)
DEB_PACKAGES=(faketime qemu-user-static libc6-dev-arm64-cross)

log() { printf '[setup] %s\n' "$*" >&2; }

missing_debs=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing_debs+=("$p")
done
if ((${#missing_debs[@]})); then
  log "apt-get install ${missing_debs[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing_debs[@]}" >/dev/null
fi

if ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
  log "rustup target add aarch64-unknown-linux-gnu"
  rustup target add aarch64-unknown-linux-gnu
fi

for component in clippy rustfmt; do
  if ! rustup component list --installed | grep -q "^$component"; then
    log "rustup component add $component"
    rustup component add "$component"
  fi
done

if [ ! -f "$STAMP" ]; then
  log "creating tool virtualenv at $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q "${PY_PACKAGES[@]}"
  printf '%s\n' "${PY_PACKAGES[@]}" > "$STAMP"
fi
log "tools ready in $VENV"
