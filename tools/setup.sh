#!/usr/bin/env bash
# setup.sh — the README's first command: install dependencies, build, prepare
# the quickstart corpus (Debian's `fortunes` text) and train
# configs/quickstart.yaml on this machine. Idempotent.
set -euo pipefail
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tools/deps.sh
tools/build.sh
mkdir -p data
if [ ! -f data/fortunes.h5 ]; then
  F=/usr/share/games/fortunes
  build/gml-dist prep --tokenizer char --strip-fortune --out data/fortunes.h5 \
    $F/cookie $F/definitions $F/disclaimer $F/drugs $F/education $F/ethnic $F/food $F/fortunes \
    $F/goedel $F/humorists $F/kids $F/law $F/literature $F/love $F/magic $F/medicine $F/men-women \
    $F/miscellaneous $F/news $F/paradoxum $F/people $F/pets $F/platitudes $F/politics $F/pratchett \
    $F/riddles $F/science $F/songs-poems $F/sports $F/startrek $F/tao $F/wisdom $F/work
fi
build/gml-dist configs/quickstart.yaml "$@"
