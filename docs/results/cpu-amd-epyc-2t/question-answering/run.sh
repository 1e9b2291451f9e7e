#!/usr/bin/env bash
# The question-answering figures of the README: all-MiniLM-L6-v2 fine-tuned as an extractive question-answering
# model on cloze questions about BBC News articles (make_qa_model.py), its variants made by `slimbench optimize`
# and measured by `slimbench bench` at batch 1 and 32, 128 tokens (contexts longer than that read in windows),
# SQuAD F1 on the 400 held-out questions.
#   bash docs/results/cpu-amd-epyc-2t/question-answering/run.sh [OUT]
set -euo pipefail
out="${1:-slimbench-out-qa}"
here="$(cd "$(dirname "$0")" && pwd)"
export HF_HUB_OFFLINE=1
[ -f "$out/model/config.json" ] || python3 "$here/make_qa_model.py" "$out"
for recipe in baseline onnx-o2-int8 onnx-o2 torch-int8 bf16 compiled pruned-l2-int8; do
  # a variant the agreement check refuses is not saved (one line, exit 2); the others go on
  slimbench optimize "$out/model" --recipe "$recipe" --out "$out/models" \
    --train-data "$out/train.jsonl" --sample-data "$out/eval.jsonl" || echo "not saved: $recipe"
done
# int8 keeping 99% of the exact match (in tokens) on the eval questions (accuracy-aware fallback)
slimbench optimize "$out/model" --recipe "$here/onnx-o2-int8-within-1pct.yaml" --out "$out/models" \
  --eval-data "$out/eval.jsonl" --sample-data "$out/eval.jsonl"
slimbench bench "$out"/models/* --eval-data "$out/eval.jsonl" --results "$out/results.jsonl" --batch-sizes 1,32 \
  --seq-lens 128
slimbench report "$out/results.jsonl" --out "$out/report"
