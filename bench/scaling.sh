#!/usr/bin/env bash
# scaling.sh — the data-parallel scaling benchmark: one config trained on
# 1..N ranks for each ZeRO stage, one run per table row. Per row: tokens/s
# over the second half of the run (the trainer's last progress window, so
# start-up and the first steps stay out), the scaling efficiency against
# ranks x the one-rank ZeRO-0 row of the same call, every rank's peak
# memory, and on GPUs the job's energy per token and the SM clock of its
# lowest and highest rank (launcher/powerlog.h: a rank the power cap holds
# lower is a straggler for all). Figures only; it asserts nothing.
#
# usage: bench/scaling.sh OUTDIR [options] [key.path=value ...]
#   --ranks "1 2 4"     rank counts of the grid (default "1 2")
#   --zero "0 1 2 3"    ZeRO stages of the grid (default "0 1 2 3"); at one rank
#                       stages 1-3 run with GML_ZERO_ONE_RANK=1: the stage's own
#                       cost without communication
#   --no-grid           only the --row rows (and the one-rank ZeRO-0 base row)
#   --row "N Z LABEL [NAME=VALUE | key.path=value ...]"
#                       one more row: N ranks, ZeRO Z, environment settings
#                       (NAME without a dot) and config overrides (with a dot);
#                       repeatable, e.g. --row "2 0 graphs-off GML_CUDA_GRAPHS=0"
#   --config FILE       default configs/gpt2-124m.yaml
#   --steps S           default 50 (tokens/s of steps S/2+1 .. S)
#   --launch "CMD"      starts N ranks as CMD N BINARY ARGS; default
#                       "mpirun --bind-to none -np" (with -x for the environment
#                       settings); under SLURM e.g. --launch "srun --ntasks"
#   --binary PATH       default build/gml-dist
#   --timeout SECONDS   per run (default 600)
#   key.path=value      overrides for every row (data.path=..., train.device=cpu)
# Writes OUTDIR/scaling.md (the table), OUTDIR/rows.tsv and one log per run.
# GPT-2 124M at 16 x 1024 tokens per GPU per step is the default config.
set -uo pipefail
out=${1:?usage: bench/scaling.sh OUTDIR [options] [key.path=value ...]}
shift
ranks="1 2" zeros="0 1 2 3" grid=1 config=configs/gpt2-124m.yaml steps=50 binary=build/gml-dist timeout_s=600
launch="mpirun --bind-to none -np"
rows=() common=()
while [ $# -gt 0 ]; do
  case "$1" in
  --ranks) ranks=$2; shift 2 ;;
  --zero) zeros=$2; shift 2 ;;
  --no-grid) grid=0; shift ;;
  --row) rows+=("$2"); shift 2 ;;
  --config) config=$2; shift 2 ;;
  --steps) steps=$2; shift 2 ;;
  --launch) launch=$2; shift 2 ;;
  --binary) binary=$2; shift 2 ;;
  --timeout) timeout_s=$2; shift 2 ;;
  *=*) common+=("$1"); shift ;;
  *) echo "scaling.sh: unknown argument '$1' (see the usage at the top of bench/scaling.sh)" >&2; exit 2 ;;
  esac
done
if ! [[ $steps =~ ^[0-9]*[02468]$ ]] || [ "$steps" -lt 2 ]; then echo "scaling.sh: --steps must be an even number >= 2" >&2; exit 2; fi
for f in "$binary" "$config"; do [ -e "$f" ] || { echo "scaling.sh: $f does not exist" >&2; exit 2; }; done
mkdir -p "$out" || exit 2
work=$(mktemp -d "${TMPDIR:-/tmp}/gml-scaling-XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
half=$((steps / 2))
run_args=(train.steps=$steps log.every=$half eval.every=0 eval.batches=1 sample.tokens=0 log.tensorboard=false
  checkpoint.every_steps=0 checkpoint.every_minutes=0)
# the grid first, with the base row (one rank, ZeRO-0) always
all=("1 0 default")
if [ $grid -eq 1 ]; then
  for n in $ranks; do for z in $zeros; do
    if [ "$n" -eq 1 ] && [ "$z" -eq 0 ]; then continue; fi
    if [ "$n" -eq 1 ]; then all+=("1 $z one-rank GML_ZERO_ONE_RANK=1"); else all+=("$n $z default"); fi
  done; done
fi
all+=("${rows[@]}")

printf "ranks\tzero\tvariant\ttokens_per_s\tpeak_mib_per_rank\tmj_per_token\tsm_mhz_low_high\n" >"$out/rows.tsv"
for row in "${all[@]}"; do
  read -r n z label settings <<<"$row"
  envs=() overrides=() xs=()
  for s in $settings; do
    name=${s%%=*}
    if [[ $name == *.* ]]; then overrides+=("$s"); else envs+=("$s"); xs+=(-x "$name"); fi
  done
  [[ $launch == *mpirun* || $launch == *mpiexec* ]] || xs=()
  tag="r${n}_z${z}_${label}"
  log="$out/$tag.log"
  t1=$(date +%s)
  # shellcheck disable=SC2206 # $launch is a command with its own words
  cmd=(env "${envs[@]}" timeout "$timeout_s" $launch "$n" "${xs[@]}" "$binary" "$config" "${common[@]}" "${run_args[@]}"
    "${overrides[@]}" parallel.zero="$z" train.out_dir="$work/$tag")
  echo "+ ${cmd[*]}" >"$log"
  "${cmd[@]}" >>"$log" 2>&1
  rc=$?
  if [ $rc -ne 0 ]; then
    echo "scaling.sh: $n ranks, zero $z, $label: exit $rc (log $log): $(tail -2 "$log" | tr '\n' ' ')" >&2
    printf "%s\t%s\t%s\t-\t-\t-\t-\n" "$n" "$z" "$label" >>"$out/rows.tsv"
    continue
  fi
  last=$(grep '"kind":"train"' "$work/$tag/metrics.jsonl" | tail -1)
  tok=$(sed -E 's/.*"tokens_per_s":([0-9.eE+-]+).*/\1/' <<<"$last")
  peak=$(grep -o 'peak memory per rank (MiB): .*' "$log" | sed 's/.*: //; s/ /,/g')
  [ -n "$peak" ] || peak=$(sed -E 's/.*"mem_bytes":([0-9.eE+-]+).*/\1/' <<<"$last" | awk '{ printf "%.1f", $1 / 1048576 }')
  power=$(grep -m1 '^power: ' "$log")
  mj=$(grep -oE '[0-9.]+ mJ/token' <<<"$power" | cut -d' ' -f1)
  clk=$(grep -oE 'lowest [0-9]+ MHz on rank [0-9]+, highest [0-9]+ on rank [0-9]+' <<<"$power" |
    sed -E 's/lowest ([0-9]+) MHz on rank ([0-9]+), highest ([0-9]+) on rank ([0-9]+)/\1 (rank \2) \/ \3 (rank \4)/')
  [ -n "$clk" ] || clk=$(grep -oE 'SM [0-9]+ MHz mean' <<<"$power" | cut -d' ' -f2)
  printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\n" "$n" "$z" "$label" "$tok" "$peak" "${mj:--}" "${clk:--}" >>"$out/rows.tsv"
  echo "scaling.sh: $n ranks, zero $z, $label: $(awk -v t="$tok" 'BEGIN { printf "%.1fk", t / 1000 }') tokens/s ($(($(date +%s) - t1)) s)" >&2
done

# the table: efficiency = tokens/s / (ranks x the base row's)
awk -F'\t' -v cfg="$config" -v steps="$steps" -v half="$half" '
  NR == 1 { next }
  { n[NR] = $1; z[NR] = $2; l[NR] = $3; t[NR] = $4; p[NR] = $5; m[NR] = $6; c[NR] = $7; last = NR
    if ($1 == 1 && $2 == 0 && $3 == "default" && $4 != "-") base = $4 }
  END {
    printf "%s, tokens/s of steps %d-%d of %d\n\n", cfg, half + 1, steps, steps
    print "| ranks | ZeRO | variant | tokens/s | efficiency | peak MiB per rank | mJ/token | SM MHz (lowest / highest rank) |"
    print "| --- | --- | --- | --- | --- | --- | --- | --- |"
    for (i = 2; i <= last; i++) {
      eff = (t[i] == "-" || base == "") ? "-" : sprintf("%.1f%%", 100 * t[i] / (n[i] * base))
      tok = t[i] == "-" ? "failed" : sprintf("%.1fk", t[i] / 1000)
      printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", n[i], z[i], l[i], tok, eff, p[i], m[i], c[i]
    }
  }' "$out/rows.tsv" | tee "$out/scaling.md"
