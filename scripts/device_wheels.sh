#!/usr/bin/env bash
# Downloads the wheels that scripts/gpu_check.sh installs on a GPU machine
# that cannot reach a package index: FlashRNN (issue 4's `flashrnn` rows)
# and what it imports beyond torch (einops; ninja, which its just-in-time
# build needs), and setuptools for fusedlstm's own build where the machine's
# is older than 77 (setup.py). Run here, where the index is reachable; the lending tool
# carries the folder (it is git-ignored):
#
#   bash scripts/device_wheels.sh            # into .device_wheels/
#   run(..., carry=[".device_wheels"])       # gpu_check.sh installs from it
#
# Nothing is vendored or patched: the wheels are the published ones, and
# gpu_check.sh installs them with pip, without their dependencies (torch and
# triton are the machine's own).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${1:-$ROOT/.device_wheels}"
mkdir -p "$DEST"
# The GPU machines run CPython 3.12 on x86-64 Linux (the lending tool's
# README); FlashRNN 1.0.8 is the version of the reference figures.
python3 -m pip download --quiet --no-deps --dest "$DEST" \
  --python-version 3.12 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_28_x86_64 --only-binary=:all: \
  flashrnn==1.0.8 einops ninja "setuptools>=77"
ls -l "$DEST"
