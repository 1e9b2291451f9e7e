#!/usr/bin/env bash
# The seq2seq pruning figures of the README: magnitude-50 (half the weights, then one epoch of recovery on the
# training pairs, distilled) and the same pruning without recovery (magnitude-50-no-recovery.yaml), applied to the
# headline writer of run.sh, kept with --allow-degraded (the agreement check refuses both) and measured at batch 1
# for ROUGE-L on the 400 held-out articles.
#   bash docs/results/cpu-amd-epyc-2t/seq2seq/run-pruning.sh OUT   # OUT: run.sh's, with its model and baseline
set -euo pipefail
out="${1:-slimbench-out-seq2seq}"
here="$(cd "$(dirname "$0")" && pwd)"
export HF_HUB_OFFLINE=1
slimbench optimize "$out/model" --recipe magnitude-50 --out "$out/models-pruned" --train-data "$out/train.jsonl" \
  --sample-data "$out/eval.jsonl" --allow-degraded
slimbench optimize "$out/model" --recipe "$here/magnitude-50-no-recovery.yaml" --out "$out/models-pruned" \
  --sample-data "$out/eval.jsonl" --allow-degraded
cp -r "$out/models/baseline" "$out/models-pruned/"
slimbench bench "$out"/models-pruned/{baseline,magnitude-50,magnitude-50-no-recovery} --eval-data "$out/eval.jsonl" \
  --results "$out/pruning.jsonl" --batch-sizes 1 --seq-lens 128 --min-reps 3 --min-seconds 0.5
