#!/usr/bin/env bash
# `fastest-within-1pct` on two checkpoints slimbench never saw (make_checkpoints.py), at batch 16 and each
# checkpoint's own sequence length, then the plain optimum path (onnx-o2-int8) beside it.
#   pip install vaderSentiment
#   bash docs/results/cpu-unseen-checkpoints/run.sh WORK_DIR
# Writes WORK_DIR/<name>/{search.log,variants/,report/}; the records are variants/fastest-within-1pct.jsonl.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${1:?usage: run.sh WORK_DIR}
export HF_HUB_OFFLINE=1
[ -d "$work/sentiment/checkpoint" ] || python "$here/make_checkpoints.py" "$work"
for spec in headlines:32 sentiment:64; do
  name=${spec%%:*} seq=${spec##*:}
  dir=$work/$name
  python -m slimbench optimize "$dir/checkpoint" --recipe fastest-within-1pct --train-data "$dir/train.jsonl" \
    --eval-data "$dir/eval.jsonl" --sample-data "$dir/train.jsonl" --batch-size 16 --seq-len "$seq" \
    --out "$dir/variants" 2>&1 | tee "$dir/search.log"
  # the standard optimum path, measured into the same records for comparison
  python -m slimbench optimize "$dir/checkpoint" --recipe onnx-o2-int8 --sample-data "$dir/train.jsonl" \
    --out "$dir/variants"
  python -m slimbench bench "$dir/variants/baseline" "$dir/variants/onnx-o2-int8" --eval-data "$dir/eval.jsonl" \
    --batch-sizes 1,16 --seq-lens "$seq" --results "$dir/variants/fastest-within-1pct.jsonl"
  python -m slimbench report "$dir/variants/fastest-within-1pct.jsonl" --out "$dir/report" --overwrite --no-plots
done
