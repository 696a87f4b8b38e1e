#!/usr/bin/env bash
# Our network on burn `flex` (hn-model's convolution kernels) against its PyTorch reference,
# alternated, at the demo's shape and at two finer grids; 2 threads on both sides.
#
#   cargo build --release -p hn-model --example bench
#   TORCH_PY=/path/to/venv/bin/python bench/cpu/run.sh [rounds] > results.jsonl
#
# Each line is one measurement as printed by the two benches, with `impl` and `shape` added.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-2}
py=${TORCH_PY:-python3}
export RAYON_NUM_THREADS=2 OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE
# name  batch slices size iters widths
shapes=(
  "demo 8 16 64 5 16,32,48,64"
  "default 2 24 128 5 "
  "fine 1 32 256 3 "
)
for r in $(seq "$rounds"); do
  for s in "${shapes[@]}"; do
    read -r name b sl sz it w <<<"$s"
    for impl in ours torch; do
      if [ "$impl" = ours ]; then
        out=$(env ${w:+HN_WIDTHS=$w} ./target/release/examples/bench "$b" "$sl" "$sz" "$it")
      else
        out=$(cd bench/torch && env ${w:+HN_WIDTHS=$w} "$py" bench.py "$b" "$sl" "$sz" "$it" 2)
      fi
      while read -r line; do
        case "$line" in
          \{*) echo "{\"side\":\"$impl\",\"shape\":\"$name\",\"round\":$r,${line#\{}" ;;
        esac
      done <<<"$out"
    done
  done
done
