#!/usr/bin/env bash
# The GPU candidate pruned-l2-bf16-compiled (structured pruning + distilled recovery, bf16, AOTInductor package)
# built and measured on the CPU: does the pruning keep the encoder default within 99% of its accuracy, and what
# does the package do on a CPU with AVX-512 BF16. Batch 1 and 32, 128 tokens, 2 threads.
#   bash docs/results/cpu-amd-epyc-avx512-2t/pruned-l2-bf16-compiled/run.sh WORK_DIR
set -euo pipefail
work=${1:?usage: run.sh WORK_DIR}
export HF_HUB_OFFLINE=1
checkpoint=$(python -c "from slimbench.defaults import default_encoder; print(default_encoder().path)")
for recipe in baseline pruned-l2-bf16-compiled; do
  python -m slimbench optimize "$checkpoint" --recipe "$recipe" --train-data "$checkpoint/train.jsonl" \
    --out "$work/variants"
done
python -m slimbench bench "$work"/variants/{baseline,pruned-l2-bf16-compiled} --eval-data "$checkpoint/eval.jsonl" \
  --batch-sizes 1,32 --seq-lens 128 --threads 2 --min-reps 10 --results "$work/results.jsonl"
python -m slimbench report "$work/results.jsonl" --out "$work/report" --overwrite --no-plots
