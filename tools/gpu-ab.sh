#!/usr/bin/env bash
# gpu-ab.sh — side-by-side timing of source trees on the GPU host, in one
# device call: builds the working tree (build/) and one or more baseline trees
# (e.g. the last commit: `git archive HEAD | tar -x -C .baseline`, carried),
# then runs bench_train_step from each in turn, alternating, ROUNDS times per
# variant.
# Only ratios from one call count (bench/NOTES.md: machine noise is ~1-3%).
# Usage: tools/gpu-ab.sh OUTDIR "BASEDIR [BASEDIR2 ...]" ROUNDS "ARGS1" ["ARGS2" ...]
#   each ARGS is one bench_train_step argument list (quoted), optionally led
#   by environment settings, e.g.
#   tools/gpu-ab.sh $OUT .baseline 3 "--head-chunks 0" "GML_LT_TUNE=0 --head-chunks 4"
# Prints one JSON line per run, prefixed by "new" or the base's directory and
# the ARGS.
# AB_TRAIN=1: time the trainer instead: each run is `gml-dist
# configs/gpt2-124m.yaml` for 50 steps on shakespeare-char (one GPU, the
# tokens/s of steps 26-50, its last progress line printed), ARGS being extra
# config overrides (and environment settings).
set -uo pipefail
out=${1:?OUTDIR}; read -r -a bases <<<"${2:?BASEDIR}"; rounds=${3:?ROUNDS}; shift 3
mkdir -p "$out"
source .gpudeps/env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
target=bench_train_step; [ "${AB_TRAIN:-0}" = 1 ] && target=gml-dist
cfg=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 -DGML_PYTHON="$(command -v python3)")
t0=$(date +%s)
{ cmake -S . -B build "${cfg[@]}" && cmake --build build -j8; } >"$out/build.log" 2>&1 &
pids=($!)
for b in "${bases[@]}"; do
  { cmake -S "$b" -B "$b/build" "${cfg[@]}" && cmake --build "$b/build" -j8 --target $target; } \
    >"$out/build_$(basename "$b").log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || { tail -40 "$out"/build*.log; exit 1; }; done
echo "builds: $(( $(date +%s) - t0 )) s"
# one run: "$1" is the binary, "$2" the ARGS (environment settings, then flags)
bench() {
  local flags=--${2#*--} vars=${2%%--*}
  [[ $2 == *--* ]] || { flags=; vars=$2; }
  # shellcheck disable=SC2086 # word lists on purpose
  env $vars "$1" $flags 2>&1 | tail -1
}
if [ "${AB_TRAIN:-0}" = 1 ]; then
  mkdir -p data
  [ -f data/shakespeare_char.h5 ] ||
    build/gml-dist prep --tokenizer char --out data/shakespeare_char.h5 .gpudeps/tinyshakespeare.txt >/dev/null
  bench() { # the trainer from the binary's build directory
    local vars=() extra=() w
    for a in $2; do if [[ $a == GML_* || $a == NCCL_* ]]; then vars+=("$a"); else extra+=("$a"); fi; done
    w=$(mktemp -d /tmp/gml-ab-XXXXXX)
    env "${vars[@]}" "$(dirname "$1")/gml-dist" configs/gpt2-124m.yaml data.path=data/shakespeare_char.h5 \
      train.steps=50 eval.every=0 eval.batches=1 sample.tokens=0 log.every=25 log.tensorboard=false \
      train.out_dir="$w" "${extra[@]}" 2>&1 | grep -E "^step +50/50 \| loss"
    rm -rf "$w"
  }
fi
for ((r = 1; r <= rounds; r++)); do
  for args in "$@"; do
    echo "new  [$args] $(bench build/bench_train_step "$args")"
    for b in "${bases[@]}"; do
      echo "$(basename "$b") [$args] $(bench "$b/build/bench_train_step" "$args")"
    done
  done
done | tee "$out/ab.txt"
