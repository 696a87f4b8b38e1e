#!/usr/bin/env bash
# DICOM file -> HU float32 throughput: hn-imaging vs pydicom+numpy, same files, same run,
# one core each (RAYON_NUM_THREADS=1; numpy/openjpeg single-threaded via OMP/OPENBLAS vars).
#
#   bash bench/dicom/run.sh [ITERATIONS]        (from the repository root)
#
# Needs python3 with: pydicom pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg numpy
# (set PYTHON=/path/to/venv/bin/python to choose the interpreter).
set -euo pipefail
ITERS="${1:-50}"
PY="${PYTHON:-python3}"
D=testdata/real-imaging/dicom
FILES=(
  "$D/693_UNCR.dcm"                 # CT 512x512 uncompressed
  "$D/CT_small.dcm"                 # CT 128x128 uncompressed
  "$D/MR2_UNCR.dcm"                 # MR 1024x1024 uncompressed, non-integer slope
  "$D/693_J2KR.dcm"                 # CT 512x512 JPEG 2000 lossless
  "$D/693_J2KI.dcm"                 # CT 512x512 JPEG 2000 lossy
  "$D/MR_small_jpeg_ls_lossless.dcm" # MR 64x64 JPEG-LS lossless
  "$D/JPEG-LL.dcm"                  # NM 1024x256 JPEG lossless
  "$D/MR_small_RLE.dcm"             # MR 64x64 RLE
)
cargo build --release -q -p hn-imaging --example bench_dicom
export RAYON_NUM_THREADS=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
echo "# $(date -u +%FT%TZ) $(uname -m) $(nproc) cores; iterations $ITERS"
./target/release/examples/bench_dicom "$ITERS" "${FILES[@]}"
"$PY" bench/dicom/bench_pydicom.py "$ITERS" "${FILES[@]}"
