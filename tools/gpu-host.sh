#!/usr/bin/env bash
# gpu-host.sh — what we run on the GPU host (Ubuntu 24.04, CUDA 13) in one
# device call: build with the carried .gpudeps, run the `gpu` tests, the
# single-GPU step benchmark, and optionally the shakespeare-char baseline.
# Usage (from the repo root, .gpudeps carried): tools/gpu-host.sh OUTDIR [STEPS]
# STEPS: shakespeare-char steps (0 skips the run). Logs go to OUTDIR.
set -uo pipefail
out=${1:?OUTDIR}; steps=${2:-0}
mkdir -p "$out"
source .gpudeps/env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
t0=$(date +%s)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DGML_PYTHON="$(command -v python3)" >"$out/cmake.log" 2>&1 &&
  cmake --build build -j16 >"$out/build.log" 2>&1 || { tail -50 "$out/build.log" "$out/cmake.log"; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
ctest --test-dir build -L gpu -V >"$out/ctest_gpu.log" 2>&1; echo "ctest gpu rc=$?"
grep -E "rel err|worst|dropout|Passed|Failed|tests passed" "$out/ctest_gpu.log"
build/bench_train_step --device cuda 2>&1 | tee "$out/bench_124m.json"
if [ "$steps" -gt 0 ]; then
  mkdir -p data
  [ -f data/shakespeare_char.h5 ] ||
    build/gml-dist prep --tokenizer char --out data/shakespeare_char.h5 .gpudeps/tinyshakespeare.txt >"$out/prep.log" 2>&1
  t0=$(date +%s)
  build/gml-dist configs/shakespeare-char.yaml train.steps="$steps" train.out_dir="$out/shakespeare" >"$out/shakespeare.log" 2>&1
  echo "shakespeare rc=$? $(( $(date +%s) - t0 )) s"
  grep -E "val loss|^step +(1000|5000)/" "$out/shakespeare.log"
  tail -3 "$out/shakespeare.log"
fi
