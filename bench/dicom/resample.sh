#!/usr/bin/env bash
# Resampling a CT-sized volume (512 x 512 x 192) to the model grid (128 x 128 x 24):
# hn-imaging area / trilinear vs PyTorch interpolate area / trilinear, 1 and 2 threads.
#   PYTHON=/path/to/venv-with-torch/bin/python bash bench/dicom/resample.sh
set -euo pipefail
PY="${PYTHON:-python3}"
cargo build --release -q -p hn-imaging --example bench_resample
for t in 1 2; do
  RAYON_NUM_THREADS=$t ./target/release/examples/bench_resample 5
  "$PY" bench/dicom/resample.py 5 "$t"
done
