#!/usr/bin/env bash
# Slurm job array: task i predicts the studies whose key hashes to shard i.
#   sbatch deploy/slurm-predict-array.sh /path/manifest.csv /path/model.ckpt /path/out
# SHARDS must equal the array size (0..SHARDS-1).
#SBATCH --job-name=hn-predict
#SBATCH --array=0-7
#SBATCH --cpus-per-task=4
#SBATCH --mem=8G
#SBATCH --time=02:00:00
#SBATCH --output=hn-predict-%A_%a.log
set -euo pipefail

MANIFEST=${1:?manifest.csv}
MODEL=${2:?model checkpoint}
OUT=${3:?output folder}
SHARDS=${SHARDS:-8}
IDX=${SLURM_ARRAY_TASK_ID:?run under sbatch --array}

if [ "$SLURM_ARRAY_TASK_COUNT" != "$SHARDS" ]; then
  echo "array has $SLURM_ARRAY_TASK_COUNT tasks but SHARDS=$SHARDS" >&2
  exit 2
fi

exec hemorrhagenet predict \
  --manifest "$MANIFEST" \
  --shard-index "$IDX" \
  --shard-count "$SHARDS" \
  --model "$MODEL" \
  --out "$OUT/shard-$IDX"
