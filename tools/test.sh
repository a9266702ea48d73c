#!/usr/bin/env bash
# test.sh — the README's second command: install dependencies, build, and run
# the whole CTest suite (CMocka programs + PyTorch/TensorBoard reference
# tests). GPU tests (label `gpu`) report "skipped" where there is no GPU.
# Usage: tools/test.sh [extra ctest args, e.g. -L gpu]
set -euo pipefail
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tools/deps.sh
tools/build.sh
ctest --test-dir build --output-on-failure -j2 "$@"
