#!/usr/bin/env bash
# The decoder default at batch 1 and 32 (128-token prompts, 32 greedy tokens): fp32 generate(), the optimum
# path (onnx-o2-int8), and ONNX Runtime GenAI models without and with int8 (onnx-genai-fp32, onnx-genai-int8).
#   bash docs/results/cpu-amd-epyc-avx512-2t/causal-lm-genai/run.sh WORK_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${1:?usage: run.sh WORK_DIR}
export HF_HUB_OFFLINE=1
checkpoint=$(python -c "from slimbench.defaults import default_decoder; print(default_decoder().path)")
for recipe in baseline onnx-o2-int8 "$here/onnx-genai-fp32.yaml" onnx-genai-int8; do
  python -m slimbench optimize "$checkpoint" --recipe "$recipe" --out "$work/variants"
done
python -m slimbench bench "$work"/variants/{baseline,onnx-o2-int8,onnx-genai-fp32,onnx-genai-int8} \
  --eval-data "$checkpoint/eval.jsonl" --batch-sizes 1,32 --seq-lens 128 --threads 2 --min-reps 10 \
  --results "$work/results.jsonl"
python -m slimbench report "$work/results.jsonl" --out "$work/report" --overwrite --no-plots
