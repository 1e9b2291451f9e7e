#!/usr/bin/env bash
# One pruning (half the heads, two thirds of the FFN neurons, 2 layers; two epochs of distilled recovery) with three
# finishes, on the encoder default, batch 1 and 32, 128 tokens, 2 threads: ONNX O2 + dynamic int8 (pruned-l2-int8),
# ONNX O1 + static int8 (pruned-l2-static-int8.yaml here), and bf16 + AOTInductor (pruned-l2-bf16-compiled, the GPU
# candidate; its package is compiled for the CPU here).
#   bash docs/results/cpu-amd-epyc-avx512-2t/pruned-finishes/run.sh WORK_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${1:?usage: run.sh WORK_DIR}
export HF_HUB_OFFLINE=1
checkpoint=$(python -c "from slimbench.defaults import default_encoder; print(default_encoder().path)")
for recipe in baseline pruned-l2-int8 "$here/pruned-l2-static-int8.yaml" pruned-l2-bf16-compiled; do
  python -m slimbench optimize "$checkpoint" --recipe "$recipe" --train-data "$checkpoint/train.jsonl" \
    --out "$work/variants"
done
python -m slimbench bench "$work"/variants/{baseline,pruned-l2-int8,pruned-l2-static-int8,pruned-l2-bf16-compiled} \
  --eval-data "$checkpoint/eval.jsonl" --batch-sizes 1,32 --seq-lens 128 --threads 2 --min-reps 10 \
  --results "$work/results.jsonl"
python -m slimbench report "$work/results.jsonl" --out "$work/report" --overwrite --no-plots
