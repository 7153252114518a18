#!/usr/bin/env bash
# Checks that a file is a 64-bit little-endian ELF for aarch64 (e_machine 183)
# and prints its size.
set -euo pipefail
f="$1"
[ -f "$f" ] || { echo "missing: $f" >&2; exit 1; }
magic=$(od -An -tx1 -N4 "$f" | tr -d ' \n')
class=$(od -An -tu1 -j4 -N1 "$f" | tr -d ' ')
machine=$(od -An -tu2 -j18 -N2 "$f" | tr -d ' ')
if [ "$magic" != "7f454c46" ] || [ "$class" != "2" ] || [ "$machine" != "183" ]; then
  echo "$f is not an aarch64 ELF (magic=$magic class=$class machine=$machine)" >&2
  exit 1
fi
echo "$f: aarch64 ELF, $(stat -c %s "$f") bytes"
