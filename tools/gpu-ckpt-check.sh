#!/usr/bin/env bash
# gpu-ckpt-check.sh — checkpoint figures on the GPU host (after tools/gpu-host.sh
# built build/): bit-for-bit resume on the GPU (shakespeare-char, 200 steps
# straight vs stopped by SIGUSR1 at 100 + --resume auto), the stall and
# write bandwidth of a GPT-2 124M checkpoint against dd's on the same disk,
# a checkpoint written by 4 CPU ranks with ZeRO-3 resumed on one GPU,
# and with N >= 2 GPUs the same written by N ranks in parallel (one rank
# file each, per-rank GB/s), verified by `ckpt info` and resumed on 1 GPU.
# Usage: tools/gpu-ckpt-check.sh OUTDIR [N]
set -uo pipefail
out=${1:?OUTDIR}; N=${2:-2}; mkdir -p "$out"
source .gpudeps/env.sh
mkdir -p data
[ -f data/shakespeare_char.h5 ] ||
  build/gml-dist prep --tokenizer char --out data/shakespeare_char.h5 .gpudeps/tinyshakespeare.txt >/dev/null
work=$(mktemp -d /tmp/gml-ckpt-XXXXXX)
common="train.steps=200 eval.every=0 sample.tokens=0 log.every=1 log.tensorboard=false checkpoint.every_steps=100"
build/gml-dist configs/shakespeare-char.yaml $common train.out_dir=$work/a >"$out/resume_a.log" 2>&1
GML_TEST_SIGNAL_AT_STEP=100 build/gml-dist configs/shakespeare-char.yaml $common train.out_dir=$work/b \
  >"$out/resume_b1.log" 2>&1; echo "stopped run exit $? (3 = preempted with checkpoint)"
build/gml-dist configs/shakespeare-char.yaml $common train.out_dir=$work/b --resume auto >"$out/resume_b2.log" 2>&1
echo "resumed run exit $?"
pick() { grep '"kind":"train"' "$1" | sed -E 's/.*"step":([0-9]+).*"loss":([^,]*).*"lr":([^,]*).*"grad_norm":([^,}]*).*/\1 \2 \3 \4/'; }
pick $work/a/metrics.jsonl >"$out/a.txt"; pick $work/b/metrics.jsonl >"$out/b.txt"
if cmp -s "$out/a.txt" "$out/b.txt"; then echo "GPU resume: $(wc -l <"$out/a.txt") train lines identical"
else echo "GPU resume: DIFFERENT"; diff "$out/a.txt" "$out/b.txt" | head -5; fi
# the step-200 checkpoints: same content digest (CRC of all tensors' bytes) = same weights and moments
da=$(build/gml-dist ckpt info $work/a/ckpt | grep -o 'digest [0-9a-f]*'); db=$(build/gml-dist ckpt info $work/b/ckpt | grep -o 'digest [0-9a-f]*')
echo "final checkpoints: straight $da, stopped+resumed $db"; [ -n "$da" ] && [ "$da" = "$db" ] && echo "final state identical"
# 124M checkpoint: stall and bandwidth
build/gml-dist configs/gpt2-124m.yaml data.path=data/shakespeare_char.h5 train.steps=20 eval.every=0 eval.batches=1 \
  sample.tokens=0 log.every=10 checkpoint.every_steps=10 checkpoint.keep_last=1 train.out_dir=$work/g \
  >"$out/ckpt_124m.log" 2>&1; echo "124M run exit $?"
grep -E "checkpoint( written)?:|step +20/" "$out/ckpt_124m.log"
ls -l $work/g/ckpt/step_*/
if [ "$N" -ge 2 ] && [ "$(nvidia-smi -L | wc -l)" -ge "$N" ]; then
  # N ranks write their shards in parallel; the stall is each rank's copy of its shard to host memory
  mpirun --bind-to none -x LD_LIBRARY_PATH -np $N build/gml-dist configs/gpt2-124m.yaml data.path=data/shakespeare_char.h5 \
    train.steps=20 eval.every=0 eval.batches=1 sample.tokens=0 log.every=10 checkpoint.every_steps=10 \
    checkpoint.keep_last=1 parallel.zero=1 train.out_dir=$work/gN >"$out/ckpt_124m_dp$N.log" 2>&1
  echo "124M dp=$N run exit $?"
  grep -E "checkpoint( written)?:|step +20/" "$out/ckpt_124m_dp$N.log"
  ls -l $work/gN/ckpt/step_*/
  build/gml-dist ckpt info $work/gN/ckpt >"$out/ckpt_info_dp$N.txt" 2>&1; echo "ckpt info (every piece and the VDS) exit $?"
  tail -1 "$out/ckpt_info_dp$N.txt"
  build/gml-dist configs/gpt2-124m.yaml data.path=data/shakespeare_char.h5 train.steps=25 eval.every=0 \
    eval.batches=1 sample.tokens=0 log.every=5 checkpoint.dir=$work/gN/ckpt train.out_dir=$work/g1 --resume auto \
    >"$out/ckpt_124m_dp${N}_to_1.log" 2>&1; echo "dp=$N checkpoint resumed on 1 GPU: exit $?"
  grep -E "^resume:|step +25/" "$out/ckpt_124m_dp${N}_to_1.log"
fi
# device change: 4 CPU ranks with ZeRO-3 stop at step 10 (checkpoint); one GPU resumes it; steps 11-20 vs the
# uninterrupted CPU run (fp32 vs bf16: close, not equal)
small="model.n_layer=2 model.n_head=4 model.n_embd=128 model.dropout=0 train.steps=20 eval.every=0 eval.batches=1 sample.tokens=0 log.every=1 log.tensorboard=false checkpoint.every_steps=0"
build/gml-dist configs/shakespeare-char.yaml $small data.batch_size=16 train.device=cpu train.out_dir=$work/x_ref >"$out/x_ref.log" 2>&1
GML_TEST_SIGNAL_AT_STEP=10 mpirun --bind-to none -x OMP_NUM_THREADS=2 -x GML_TEST_SIGNAL_AT_STEP -np 4 build/gml-dist \
  configs/shakespeare-char.yaml $small data.batch_size=4 train.device=cpu parallel.zero=3 train.out_dir=$work/x_cpu4 \
  >"$out/x_cpu4.log" 2>&1; echo "dp=4 ZeRO-3 CPU run stopped: exit $? (3 = checkpoint committed)"
build/gml-dist configs/shakespeare-char.yaml $small data.batch_size=16 train.device=cuda \
  checkpoint.dir=$work/x_cpu4/ckpt train.out_dir=$work/x_gpu --resume auto >"$out/x_gpu.log" 2>&1
echo "resumed on 1 GPU: exit $?"; grep -E "^resume:" "$out/x_gpu.log"
awk 'NR == FNR { a[$1] = $2; next } ($1 in a) && $1 > 10 { d = a[$1] - $2; if (d < 0) d = -d; r = d / a[$1]; if (r > w) w = r; k++ }
  END { printf "CPU dp=4 ZeRO-3 checkpoint -> 1 GPU: steps 11-20 (%d) within %.2e of the uninterrupted CPU run\n", k, w }' \
  <(pick $work/x_ref/metrics.jsonl) <(pick $work/x_gpu/metrics.jsonl)
dd if=/dev/zero of=$work/dd.bin bs=1M count=2048 conv=fsync 2>&1 | tail -1
rm -rf "$work"
