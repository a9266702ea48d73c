#!/usr/bin/env bash
# gpu-multi.sh — multi-GPU checks on a GPU host with N >= 2 GPUs, one call:
# build; bf16 parity of dp=N against one GPU on the same global batch
# (shakespeare-char, 50 steps); then bench/scaling.sh: GPT-2 124M at 16 x 1024
# tokens per GPU per step (tokens/s of steps 26-50 of 50), scaling
# efficiency, per-rank peak memory and the power summary (mJ/token, the SM
# clock range over ranks) for 1..N GPUs x ZeRO 0/1/2/3 (on 1 GPU, ZeRO 1-3
# with GML_ZERO_ONE_RANK=1: each stage's machinery without communication),
# and its variants (graphs off, embedding gradients, gathers, stream
# priority, attention kernels, NCCL channels, bucket sizes), each call with
# its own 1-GPU ZeRO-0 base row; then the NCCL watchdog: rank 1 SIGSTOPped
# after step 5, parallel.timeout_s=10.
# Usage: tools/gpu-multi.sh OUTDIR [N] [PARTS]
#   PARTS: comma-separated subset of tests,parity,scale,variants,hang (default
#   all; the build always runs). On 4 GPUs all of it takes about 10 minutes,
#   a device call's limit: split it, e.g. "tests,parity,hang" then "scale,variants".
set -uo pipefail
out=${1:?OUTDIR}; N=${2:-2}; parts=",${3:-tests,parity,scale,variants,hang},"; mkdir -p "$out"
want() { [[ $parts == *",$1,"* ]]; }
source .gpudeps/env.sh
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$out/gpus.txt"
t0=$(date +%s)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DGML_PYTHON="$(command -v python3)" >"$out/cmake.log" 2>&1 && cmake --build build -j32 >"$out/build.log" 2>&1 ||
  { tail -30 "$out/build.log"; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
if want tests; then
  ctest --test-dir build -L gpu -V >"$out/ctest_gpu.log" 2>&1; echo "ctest -L gpu rc=$? ($(( $(date +%s) - t0 )) s so far)"
  grep -E "GPUs|ranks on|identical|Passed|Failed|Skipped" "$out/ctest_gpu.log" | grep -v "^[0-9]*: *$" | tail -16
fi
mkdir -p data
[ -f data/shakespeare_char.h5 ] ||
  build/gml-dist prep --tokenizer char --out data/shakespeare_char.h5 .gpudeps/tinyshakespeare.txt >/dev/null
w=$(mktemp -d /tmp/gml-multi-XXXXXX)
MPI="mpirun --bind-to none -x NCCL_NVLS_ENABLE -x LD_LIBRARY_PATH"
par="train.steps=50 eval.every=0 eval.batches=1 sample.tokens=0 log.every=1 log.tensorboard=false model.dropout=0.2"
if want parity; then
build/gml-dist configs/shakespeare-char.yaml $par data.batch_size=64 train.out_dir=$w/p1 >"$out/par1.log" 2>&1
$MPI -np $N build/gml-dist configs/shakespeare-char.yaml $par data.batch_size=$((64 / N)) parallel.zero=1 \
  train.out_dir=$w/pN >"$out/parN.log" 2>&1; echo "dp=$N run exit $?"
loss() { grep '"kind":"train"' "$1" | sed -E 's/.*"step":([0-9]+).*"loss":([^,]*).*/\1 \2/'; }
awk -v n=$N 'NR == FNR { a[$1] = $2; next } ($1 in a) {
    d = a[$1] - $2; if (d < 0) d = -d; r = d / a[$1]; if (r > w) { w = r; ws = $1 }; k++ }
  END { printf "bf16 parity dp=%d zero=1 vs 1 GPU, same global batch: %d steps, worst relative loss difference %.2e (step %d)\n", n, k, w, ws }' \
  <(loss $w/p1/metrics.jsonl) <(loss $w/pN/metrics.jsonl)
fi
# the scaling table (bench/scaling.sh): GPT-2 124M, 16 x 1024 tokens per GPU
scaling=(--launch "$MPI -np" data.path=data/shakespeare_char.h5)
if want scale; then
  bash bench/scaling.sh "$out/scale" --ranks "$(seq -s ' ' 1 "$N")" --zero "0 1 2 3" "${scaling[@]}" 2>>"$out/scaling_times.txt"
fi
# what the overlap of ZeRO-0's bucketed all-reduce with backward depends on
# (each against the one-GPU ZeRO-0 row that bench/scaling.sh runs first)
if want variants; then
  bash bench/scaling.sh "$out/variants" --no-grid "${scaling[@]}" \
    --row "$N 0 graphs-off GML_CUDA_GRAPHS=0" --row "$N 1 graphs-off GML_CUDA_GRAPHS=0" \
    --row "$N 0 embedding-reduced parallel.embedding_grads=reduce" \
    --row "$N 1 embedding-reduced parallel.embedding_grads=reduce" \
    --row "$N 1 gather-after-adamw GML_ZERO_GATHER_PARTS=1" \
    --row "$N 3 embedding-gathered-in-forward GML_ZERO3_EARLY_GATHER=0" \
    --row "$N 0 comm-stream-normal-priority GML_NCCL_STREAM_PRIORITY=0" \
    --row "$N 0 attention-own-kernels GML_ATTENTION=own" \
    --row "$N 0 nccl-4-channels NCCL_MAX_NCHANNELS=4" --row "$N 0 nccl-8-channels NCCL_MAX_NCHANNELS=8" \
    --row "$N 0 buckets-128MiB parallel.bucket_mib=128" --row "$N 0 buckets-8MiB parallel.bucket_mib=8" \
    2>>"$out/scaling_times.txt"
fi
# a hung rank under NCCL: the others' watchdog must end the job (timeout 10 s)
if want hang; then
th=$(date +%s.%N)
GML_TEST_FAULT=1,5,STOP timeout 180 $MPI -x GML_TEST_FAULT -np 2 build/gml-dist configs/shakespeare-char.yaml $par \
  train.steps=100000 parallel.timeout_s=10 train.out_dir=$w/hang >"$out/hang.log" 2>&1; rc=$?
echo "rank 1 SIGSTOPped after step 5: job ended with exit $rc after $(awk -v a="$th" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s (124 = hang)"
grep -m2 -E "did not complete|error" "$out/hang.log"
fi
echo "gpu-multi.sh: $(( $(date +%s) - t0 )) s in all"
rm -rf "$w"
