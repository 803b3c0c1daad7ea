#!/usr/bin/env bash
# SDPA flash and FlashCore's mma.sync kernel under sustained load, alternated case by case, so
# that both sides of each ratio run at the same temperature and in the same power-limit state
# (a table of minutes of load heats an H100 by 10-15 °C, and its clocks at 700 W fall with it).
#
#   bash paired_sustained.sh [ROUNDS] [SECONDS] [CAUSAL: both|false|true] [B,H,S,D ...]
#
# Run in a folder holding FlashCore's `tiles` binary and `sdpa_sustained.py` (e.g. .gpu/ on the
# GPU machine). For each shape (default: issue 3's four), causal and not (or as CAUSAL says): `sdpa_sustained.py --backends flash`
# and `tiles --sustain --chosen-mma-sync` (the mma.sync kernel the library picks by itself), SDPA
# first in odd rounds and FlashCore first in even ones. Prints the sustained tables of both;
# `scripts/compare_sustained.py LOG LOG` merges them.
set -euo pipefail
rounds=${1:-2}
seconds=${2:-4}
causals=${3:-both}
[[ $causals == both ]] && causals="false true"
shapes=("${@:4}")
((${#shapes[@]})) || shapes=(16,16,512,64 8,16,2048,64 8,16,2048,128 2,16,8192,128)
sdpa() { python3 sdpa_sustained.py --seconds "$seconds" --backends flash --causal "$([[ $2 == true ]] && echo 1 || echo 0)" "$1"; }
ours() { ./tiles --sustain "$seconds" --chosen-mma-sync --causal "$2" "$1"; }
for round in $(seq 1 "$rounds"); do
  for shape in "${shapes[@]}"; do
    for causal in $causals; do
      if ((round % 2)); then
        sdpa "$shape" "$causal"
        ours "$shape" "$causal"
      else
        ours "$shape" "$causal"
        sdpa "$shape" "$causal"
      fi
    done
  done
done
