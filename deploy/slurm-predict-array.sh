#!/usr/bin/env bash
# Slurm job array: task i predicts the studies whose key hashes to shard i.
#   sbatch deploy/slurm-predict-array.sh /path/manifest.csv /path/run/model /path/out
# Each task writes OUT/<study key>/ (atomically) and OUT/shard-<i>-of-<N>.json; finished
# studies are skipped when a task is rerun (sbatch --array=I ...). A task exits 1 when any of
# its studies failed.
# SHARDS must equal the array size (0..SHARDS-1).
#SBATCH --job-name=hn-predict
#SBATCH --array=0-7
#SBATCH --cpus-per-task=4
#SBATCH --mem=8G
#SBATCH --time=02:00:00
#SBATCH --output=hn-predict-%A_%a.log
set -euo pipefail

MANIFEST=${1:?manifest.csv}
MODEL=${2:?model folder (run/model with card.json)}
OUT=${3:?output folder}
SHARDS=${SHARDS:-8}
IDX=${SLURM_ARRAY_TASK_ID:?run under sbatch --array}

# Not checked against SLURM_ARRAY_TASK_COUNT: a failed shard is rerun alone with
# `sbatch --array=I` (count 1) and the same SHARDS. hemorrhagenet rejects IDX >= SHARDS.

exec hemorrhagenet predict \
  --manifest "$MANIFEST" \
  --shard-index "$IDX" \
  --shard-count "$SHARDS" \
  --model "$MODEL" \
  --out "$OUT"
