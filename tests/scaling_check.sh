#!/usr/bin/env bash
# scaling_check.sh — bench/scaling.sh on CPU ranks (mpirun), a small GPT:
# the table has every grid row and the extra rows, each with tokens/s, an
# efficiency against the one-rank ZeRO-0 row, every rank's peak memory; a
# row's environment setting reaches the ranks (env, and -x for mpirun) and its
# config override reaches the trainer; bad arguments exit 2. The figures
# themselves are not checked (timings never decide a test).
# usage: scaling_check.sh GML_BINARY SOURCE_DIR WORKDIR
set -uo pipefail
bin=${1:?} src=${2:?} work=${3:?}
rm -rf "$work" && mkdir -p "$work" || exit 1
fail() { echo "FAIL: $*"; exit 1; }
# ~60k words of text from a fixed list (no download, no shared data)
awk 'BEGIN { srand(7); split("the of and to in is was he for it with as his on be at by had are but from not", w, " ");
  for (i = 0; i < 60000; i++) printf "%s%s", w[int(rand() * 21) + 1], (i % 12 == 11) ? ".\n" : " " }' >"$work/text.txt"
"$bin" prep --tokenizer char --out "$work/data.h5" "$work/text.txt" >/dev/null || fail "prep"
small=(--config "$src/configs/quickstart.yaml" data.path="$work/data.h5" train.device=cpu model.n_layer=1
  model.n_embd=64 model.n_head=2 model.block_size=32 data.batch_size=2)
bash "$src/bench/scaling.sh" "$work/out" --binary "$bin" --ranks "1 2" --zero "0 1 3" --steps 4 \
  --row "1 2 stage-kept GML_ZERO_ONE_RANK=1" --row "2 0 rows-gathered parallel.embedding_grads=gather" \
  --launch "$GML_MPIEXEC --oversubscribe --bind-to none -np" "${small[@]}" >"$work/stdout.txt" 2>"$work/stderr.txt" ||
  fail "scaling.sh exit $?: $(cat "$work/stderr.txt")"
table="$work/out/scaling.md"
cat "$table"
want=("| 1 | 0 | default | " "| 1 | 1 | one-rank | " "| 1 | 3 | one-rank | " "| 2 | 0 | default | " "| 2 | 1 | default | "
  "| 2 | 3 | default | " "| 1 | 2 | stage-kept | " "| 2 | 0 | rows-gathered | ")
for w in "${want[@]}"; do
  line=$(grep -F -- "$w" "$table") || fail "no row '$w'"
  # tokens/s as 12.3k, an efficiency in %, one peak per rank
  ranks=$(cut -d'|' -f2 <<<"$line" | tr -d ' ')
  [[ $line =~ \|\ [0-9.]+k\ \|\ [0-9.]+%\ \|\ ([0-9.,]+)\ \| ]] || fail "row '$w' lacks tokens/s, efficiency or peak: $line"
  peaks=$(tr ',' '\n' <<<"${BASH_REMATCH[1]}" | grep -c .)
  [ "$peaks" -eq "$ranks" ] || fail "row '$w': $peaks peak figures for $ranks ranks: $line"
done
grep -F "| 1 | 0 | default | " "$table" | grep -qF "| 100.0% |" || fail "the base row is not 100%"
[ "$(grep -c '^| [12] ' "$table")" -eq 8 ] || fail "expected 8 rows"
# the row's environment reached the rank (one rank keeps ZeRO-2), its override the trainer
grep -q "^parallel: dp 1, zero 2:" "$work/out/r1_z2_stage-kept.log" || fail "GML_ZERO_ONE_RANK=1 did not reach the rank"
grep -q "^parallel: dp 1, zero 0:" "$work/out/r1_z0_default.log" || fail "the base row is not ZeRO-0"
grep -q "token rows gathered" "$work/out/r2_z0_rows-gathered.log" || fail "parallel.embedding_grads=gather not applied"
# bad arguments: exit 2 with a message
bash "$src/bench/scaling.sh" "$work/bad" --steps 5 >/dev/null 2>"$work/bad.txt"
[ $? -eq 2 ] && grep -q "even number" "$work/bad.txt" || fail "--steps 5 not refused with exit 2"
bash "$src/bench/scaling.sh" "$work/bad" --frobnicate >/dev/null 2>"$work/bad.txt"
[ $? -eq 2 ] && grep -q "unknown argument" "$work/bad.txt" || fail "an unknown flag not refused with exit 2"
echo "SCALING OK"
