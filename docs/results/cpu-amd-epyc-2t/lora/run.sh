#!/usr/bin/env bash
# The LoRA figures of the README: a peft LoRA adapter over all-MiniLM-L6-v2 fine-tuned on BBC News
# (make_adapter.py), given to `slimbench optimize` as it is (slimbench merges it into its base once), its variants
# measured by `slimbench bench` at batch 1 and 32, seq 128, accuracy on the 400 held-out articles.
#   bash docs/results/cpu-amd-epyc-2t/lora/run.sh [OUT]
set -euo pipefail
out="${1:-slimbench-out-lora}"
here="$(cd "$(dirname "$0")" && pwd)"
export HF_HUB_OFFLINE=1
[ -f "$out/adapter/adapter_config.json" ] || python3 "$here/make_adapter.py" "$out"
for recipe in baseline bf16 torch-int8 onnx-o2 onnx-o2-int8 pruned-l2-int8; do
  # a variant the agreement check refuses is not saved (one line, exit 2); the others go on
  slimbench optimize "$out/adapter" --recipe "$recipe" --out "$out/models" --sample-data "$out/eval.jsonl" \
    --train-data "$out/train.jsonl" || echo "not saved: $recipe"
done
slimbench bench "$out"/models/* --eval-data "$out/eval.jsonl" --results "$out/results.jsonl" --batch-sizes 1,32 \
  --seq-lens 128
slimbench report "$out/results.jsonl" --out "$out/report"
