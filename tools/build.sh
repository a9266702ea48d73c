#!/usr/bin/env bash
# build.sh — configure and build gml-dist into build/ (CUDA backend too where
# nvcc is found). Usage: tools/build.sh [extra cmake args]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -x /usr/local/cuda/bin/nvcc ] && export PATH=/usr/local/cuda/bin:$PATH
cmake -S . -B build -G Ninja -DGML_PYTHON="$PWD/.venv/bin/python" "$@" >/dev/null
cmake --build build -j"$(nproc)"
