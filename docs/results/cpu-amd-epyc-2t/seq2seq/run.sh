#!/usr/bin/env bash
# The seq2seq figures of the README: a BART headline writer whose encoder and decoder start from
# all-MiniLM-L6-v2's weights, fine-tuned on BBC News (make_headline_model.py), its variants made by
# `slimbench optimize` and measured by `slimbench bench` at batch 1 and 16: an article's first 128 tokens, then
# 32 greedy tokens; ROUGE-L of the headlines written for the 400 held-out articles.
#   bash docs/results/cpu-amd-epyc-2t/seq2seq/run.sh [OUT]
set -euo pipefail
out="${1:-slimbench-out-seq2seq}"
here="$(cd "$(dirname "$0")" && pwd)"
export HF_HUB_OFFLINE=1
[ -f "$out/model/config.json" ] || python3 "$here/make_headline_model.py" "$out"
for recipe in baseline onnx-o2-int8 onnx-o2 onnx bf16 bf16-static-cache torchao-int8wo; do
  # a variant the agreement check refuses is not saved (one line, exit 2); the others go on
  slimbench optimize "$out/model" --recipe "$recipe" --out "$out/models" --sample-data "$out/eval.jsonl" \
    || echo "not saved: $recipe"
done
# int8 with a scale per output channel (onnx-o2-int8 has one per tensor), a recipe file beside this script
slimbench optimize "$out/model" --recipe "$here/onnx-o2-int8-per-channel.yaml" --out "$out/models" \
  --sample-data "$out/eval.jsonl" || echo "not saved: onnx-o2-int8-per-channel"
slimbench bench "$out"/models/* --eval-data "$out/eval.jsonl" --results "$out/results.jsonl" --batch-sizes 1,16 \
  --seq-lens 128
slimbench report "$out/results.jsonl" --out "$out/report"
