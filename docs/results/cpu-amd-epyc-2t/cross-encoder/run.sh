#!/usr/bin/env bash
# The cross-encoder figures of the README: all-MiniLM-L6-v2 fine-tuned as a one-score cross-encoder on BBC News
# article pairs (make_cross_encoder.py), its variants made by `slimbench optimize` and measured by `slimbench
# bench` at batch 1 and 32, 128 tokens, Spearman correlation with the 400 held-out pairs' labels.
#   bash docs/results/cpu-amd-epyc-2t/cross-encoder/run.sh [OUT]
set -euo pipefail
out="${1:-slimbench-out-cross-encoder}"
here="$(cd "$(dirname "$0")" && pwd)"
export HF_HUB_OFFLINE=1
[ -f "$out/model/config.json" ] || python3 "$here/make_cross_encoder.py" "$out"
for recipe in baseline onnx-o2-int8 onnx-o2 torch-int8 bf16 compiled pruned-l2-int8; do
  # a variant the agreement check refuses is not saved (one line, exit 2); the others go on
  slimbench optimize "$out/model" --recipe "$recipe" --out "$out/models" \
    --train-data "$out/train.jsonl" --sample-data "$out/eval.jsonl" || echo "not saved: $recipe"
done
# int8 keeping 99% of the Spearman correlation on the eval pairs (accuracy-aware fallback)
slimbench optimize "$out/model" --recipe "$here/onnx-o2-int8-within-1pct.yaml" --out "$out/models" \
  --eval-data "$out/eval.jsonl" --sample-data "$out/eval.jsonl"
slimbench bench "$out"/models/* --eval-data "$out/eval.jsonl" --results "$out/results.jsonl" --batch-sizes 1,32 \
  --seq-lens 128
slimbench report "$out/results.jsonl" --out "$out/report"
