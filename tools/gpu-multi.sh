#!/usr/bin/env bash
# gpu-multi.sh — multi-GPU checks on a GPU host with N >= 2 GPUs, one call:
# build; bf16 parity of dp=N against one GPU on the same global batch
# (shakespeare-char, 50 steps); then GPT-2 124M at 16 x 1024 tokens per GPU
# per step (steps 26-50 of 50): tokens/s, scaling efficiency, peak memory
# and the power summary (mJ/token, the SM clock range over ranks) for 1..N GPUs x ZeRO 0/1/2/3 (on 1 GPU, ZeRO 1-3 with GML_ZERO_ONE_RANK=1:
# each stage's machinery without communication, against 1-GPU ZeRO-0;
# variants need the 1-GPU row of the same call for their efficiency: run
# them with "scale"); then the NCCL watchdog: rank 1 SIGSTOPped after step 5,
# parallel.timeout_s=10.
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
big="data.path=data/shakespeare_char.h5 train.steps=50 eval.every=0 eval.batches=1 sample.tokens=0 log.every=25 log.tensorboard=false"
printf "%-6s %-5s %-28s %-12s %s\n" gpus zero variant tokens/s "mem | per-rank peak" | tee "$out/scaling.txt"
scale() { # scale N ZERO LABEL "KEY=VALUE ..." [ENV=VALUE ...]: one 50-step GPT-2 124M run (tokens/s of steps 26-50), one table row
  local n=$1 z=$2 label=$3 extra=$4; shift 4
  local xs="" t1; t1=$(date +%s); for e in "$@"; do xs="$xs -x ${e%%=*}"; done
  env "$@" $MPI $xs -np $n build/gml-dist configs/gpt2-124m.yaml $big $extra parallel.zero=$z train.out_dir=$w/s${n}_${z}_$label \
    >"$out/s${n}_${z}_$label.log" 2>&1 || { echo "np=$n zero=$z $label failed: $(tail -2 $out/s${n}_${z}_$label.log)"; return; }
  local line tok mem
  echo "$n GPUs zero $z $label: $(( $(date +%s) - t1 )) s" >>"$out/scaling_times.txt"
  line=$(grep -E "^step +50/50 \| loss" "$out/s${n}_${z}_$label.log")
  # tokens/s of steps 26-50 from metrics.jsonl (full precision), as "1034.6k tok/s"
  tok=$(grep '"kind":"train"' "$w/s${n}_${z}_$label/metrics.jsonl" | tail -1 |
    sed -E 's/.*"tokens_per_s":([0-9.eE+-]+).*/\1/' | awk '{ printf "%.1fk tok/s", $1 / 1000 }')
  mem=$(grep -o 'peak memory per rank (MiB): .*' "$out/s${n}_${z}_$label.log")
  # the power summary (launcher/powerlog.h): the job's mJ/token, the SM clock
  # range over ranks (a GPU the power cap holds lower is the job's straggler)
  pw=$(grep -o '^power: .*' "$out/s${n}_${z}_$label.log" | grep -oE '[0-9.]+ mJ/token|SM [0-9]+ MHz mean|lowest [0-9]+ MHz on rank [0-9]+, highest [0-9]+ on rank [0-9]+')
  printf "%-6s %-5s %-28s %-12s %s | %s | %s\n" $n $z "$label" "$tok" "$(echo "$line" | grep -oE 'mem [0-9.]+ [GM]iB')" "$mem" \
    "$(echo $pw)" | tee -a "$out/scaling.txt"
}
want scale && for n in $(seq 1 $N); do for z in 0 1 2 3; do
  # one GPU: ZeRO 1-3 on a one-rank group, the stage's cost without communication
  if [ $n -eq 1 ] && [ $z -gt 0 ]; then scale 1 $z one-rank "" GML_ZERO_ONE_RANK=1; continue; fi
  scale $n $z default ""
done; done
efficiency() { # each row's tokens/s against (GPUs x the 1-GPU default row of this call)
  awk '$1 == 1 && $3 == "default" { one = $4 + 0 } NR > 1 && one > 0 && ($1 > 1 || $3 != "default") {
         printf "%s GPUs zero %s %-28s %7.1fk tok/s  efficiency %.1f%%\n", $1, $2, $3, $4 + 0, 100 * ($4 + 0) / ($1 * one) }' \
    "$out/scaling.txt"
}
if want variants; then
# what the overlap of ZeRO-0's bucketed all-reduce with backward depends on
scale $N 0 graphs-off "" GML_CUDA_GRAPHS=0
scale $N 1 graphs-off "" GML_CUDA_GRAPHS=0
scale $N 0 embedding-reduced "parallel.embedding_grads=reduce"
scale $N 1 embedding-reduced "parallel.embedding_grads=reduce"
scale $N 1 gather-after-adamw "" GML_ZERO_GATHER_PARTS=1
scale $N 3 embedding-gathered-in-forward "" GML_ZERO3_EARLY_GATHER=0
scale $N 0 comm-stream-normal-priority "" GML_NCCL_STREAM_PRIORITY=0
scale $N 0 attention-own-kernels "" GML_ATTENTION=own
scale $N 0 nccl-4-channels "" NCCL_MAX_NCHANNELS=4
scale $N 0 nccl-8-channels "" NCCL_MAX_NCHANNELS=8
scale $N 0 buckets-128MiB "parallel.bucket_mib=128"
scale $N 0 buckets-8MiB "parallel.bucket_mib=8"
fi
{ want scale || want variants; } && efficiency | tee "$out/efficiency.txt"
# a hung rank under NCCL: the others' watchdog must end the job (timeout 10 s)
if want hang; then
t0=$(date +%s.%N)
GML_TEST_FAULT=1,5,STOP timeout 180 $MPI -x GML_TEST_FAULT -np 2 build/gml-dist configs/shakespeare-char.yaml $par \
  train.steps=100000 parallel.timeout_s=10 train.out_dir=$w/hang >"$out/hang.log" 2>&1; rc=$?
echo "rank 1 SIGSTOPped after step 5: job ended with exit $rc after $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s (124 = hang)"
grep -m2 -E "did not complete|error" "$out/hang.log"
fi
echo "gpu-multi.sh: $(( $(date +%s) - t0 )) s in all"
rm -rf "$w"
