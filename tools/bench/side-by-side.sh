#!/usr/bin/env bash
# Two qvit binaries (before and after a change) measured at the same time, one thread each on
# a core of its own, then again with the cores swapped: on a shared machine whose speed drifts
# by ±10 % within minutes, a slow spell then slows both, and their ratio holds where
# alternating runs would not. Prints images/s of each and after/before per round.
#
#   tools/bench/side-by-side.sh BEFORE AFTER [MODEL] [BATCH] [ROUNDS] [SECONDS]
#
#   BEFORE, AFTER  paths of two `qvit` binaries (e.g. one built in a worktree of the base
#                  commit, `git worktree add /tmp/base <rev>`)
#   MODEL          a model `qvit bench` knows (default efficientvit-b1)
#   BATCH          images per batch (default 8)
#   ROUNDS         pairs of runs, each pair on both core orders (default 2)
#   SECONDS        timed seconds per run (default 6)
#
# Extra arguments for `qvit bench` go in QVIT_BENCH_ARGS (default `--executors int`). Needs
# two cores and `taskset` (util-linux).
set -euo pipefail

if [ $# -lt 2 ]; then
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
before=$1 after=$2 model=${3:-efficientvit-b1} batch=${4:-8} rounds=${5:-2} seconds=${6:-6}
read -r -a extra <<<"${QVIT_BENCH_ARGS:---executors int}"
for bin in "$before" "$after"; do
  [ -x "$bin" ] || { echo "side-by-side: $bin is not an executable qvit binary" >&2; exit 2; }
done
[ "$(nproc)" -ge 2 ] || { echo "side-by-side: needs two cores, this machine has $(nproc)" >&2; exit 2; }

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# Images/s of the one table row for MODEL (the fifth column of `qvit bench`'s table).
run() { # core binary file
  taskset -c "$1" "$2" bench "$model" "${extra[@]}" --batch "$batch" --seconds "$seconds" \
    --threads 1 >"$3" 2>&1
  awk -v m="$model" '$1 == m { print $5; exit }' "$3"
}

printf '%-6s %-10s %-10s %s\n' round before after after/before
for r in $(seq "$rounds"); do
  for cores in "0 1" "1 0"; do
    read -r cb ca <<<"$cores"
    run "$cb" "$before" "$out/before.txt" >"$out/b" &
    run "$ca" "$after" "$out/after.txt" >"$out/a" &
    wait
    b=$(cat "$out/b") a=$(cat "$out/a")
    if [ -z "$b" ] || [ -z "$a" ]; then
      echo "side-by-side: a run printed no images/s; its output:" >&2
      cat "$out/before.txt" "$out/after.txt" >&2
      exit 1
    fi
    printf '%-6s %-10s %-10s %s\n' "$r" "$b" "$a" "$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", a / b }')"
  done
done
