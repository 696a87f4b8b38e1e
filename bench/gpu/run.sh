#!/usr/bin/env bash
# One call on a GPU machine: the model benchmark (PyTorch vs burn-tch on CUDA, the CPU-default
# and the GPU-default shapes, alternated) and the demo trained on the GPU. Figures go to
# docs/BENCHMARKS.md and docs/RESULTS.md. How the binaries are built (here, on a machine
# without a GPU) is in bench/gpu/README.md.
#
#   bash bench/gpu/run.sh [BIN_DIR]      # BIN_DIR holds bench(.xz) and hemorrhagenet(.xz)
#
# Writes logs and JSON under /tmp/hn-gpu and packs them into $OUT/hn-gpu.tgz after every
# step. Every step has its own time limit and a failed step does not stop the ones after it.
set -u
BIN=${1:-.gpu}
DEST=${OUT:-/tmp}
OUT=/tmp/hn-gpu
mkdir -p "$OUT"
pack() { tar czf "$DEST/hn-gpu.tgz" -C /tmp hn-gpu; }
for f in "$BIN"/*.xz; do [ -e "$f" ] && xz -dkf "$f"; done
chmod +x "$BIN"/bench "$BIN"/hemorrhagenet 2>/dev/null

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv | tee "$OUT/gpu.txt"
TORCH_LIB=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())' | tee -a "$OUT/gpu.txt"
nproc | sed 's/^/cpu cores: /' | tee -a "$OUT/gpu.txt"

# burn-tch links libtorch. libtorch's CUDA kernels register only when libtorch_cuda.so is
# loaded; the binaries built as in README.md list it as a dependency, and the preload keeps
# that true for builds whose linker dropped it (--as-needed: nothing calls it directly).
TCH_ENV=(env LD_LIBRARY_PATH="$TORCH_LIB" LD_PRELOAD="$TORCH_LIB/libtorch_cuda.so")

# 1. Model benchmark: train step (fwd + loss + bwd + AdamW) and inference, median of 20 after
#    2 warm-ups, PyTorch, burn-tch with libtorch's convolution backward (hn_model::conv, the
#    default) and burn-tch with burn's generic one (HN_CONV=burn) alternated twice per shape;
#    `first_ms` is the cold step.
bench_shape() { # batch slices size widths
  for rep in 1 2; do
    (cd bench/torch && HN_WIDTHS=$4 HN_TORCH_DEVICE=cuda timeout 120 python3 bench.py "$1" "$2" "$3" 20 8) 2>&1 | tee -a "$OUT/bench.jsonl"
    HN_WIDTHS=$4 HN_DEVICE=libtorch-cuda timeout 180 "${TCH_ENV[@]}" "$BIN/bench" "$1" "$2" "$3" 20 2>&1 | tee -a "$OUT/bench.jsonl"
    HN_CONV=burn HN_WIDTHS=$4 HN_DEVICE=libtorch-cuda timeout 180 "${TCH_ENV[@]}" "$BIN/bench" "$1" "$2" "$3" 20 2>&1 | tee -a "$OUT/bench.jsonl"
  done
}
bench_shape 2 24 128 16,32,64,128
bench_shape 2 32 256 32,64,128,192,256
pack

# 2. The README's demo (its own cohort, split, schedule and seed) trained on the GPU, when the
#    call's budget (BUDGET seconds since the script started, default 540) has room for it.
if [ $(( SECONDS + ${DEMO_LIMIT:-240} )) -gt "${BUDGET:-540}" ]; then
  echo "demo: skipped, no time left in this call"
else
  start=$(date +%s)
  timeout "${DEMO_LIMIT:-240}" "${TCH_ENV[@]}" "$BIN/hemorrhagenet" demo --out /tmp/demo \
    --devices libtorch-cuda:0 --bootstrap 200 > "$OUT/demo.log" 2>&1
  echo "demo: exit $? in $(( $(date +%s) - start )) s"
  cp /tmp/demo/bars.md "$OUT/bars.md" 2>/dev/null
  cp /tmp/demo/run/history.json "$OUT/history.json" 2>/dev/null
  grep -E "^\[|AUC|ECE" "$OUT/demo.log" | tail -25
  pack
fi
echo "== bench"; grep '^{' "$OUT/bench.jsonl"
