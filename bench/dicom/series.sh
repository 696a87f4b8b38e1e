#!/usr/bin/env bash
# Whole-series read: a 200-slice 512x512 CT folder (693_UNCR.dcm with distinct positions,
# file names scrambled) -> sorted HU volume. hn-imaging on 1 and 2 threads vs pydicom+numpy.
#   PYTHON=/path/to/venv/bin/python bash bench/dicom/series.sh
set -euo pipefail
PY="${PYTHON:-python3}"
DIR="$(mktemp -d)"
trap 'rm -rf "$DIR"' EXIT
"$PY" bench/dicom/series.py make "$DIR" 200
cargo build --release -q -p hn-imaging --example bench_dicom
RAYON_NUM_THREADS=1 ./target/release/examples/bench_dicom 3 "$DIR"
RAYON_NUM_THREADS=2 ./target/release/examples/bench_dicom 3 "$DIR"
"$PY" bench/dicom/series.py time "$DIR" 3
