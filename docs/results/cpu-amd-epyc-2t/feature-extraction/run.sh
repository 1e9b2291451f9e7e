#!/usr/bin/env bash
# The sentence-embedding figures of the README: all-MiniLM-L6-v2 as sentence-transformers ships it, on the
# BBC News split of the embedded defaults (400 held-out articles, nearest-neighbour accuracy).
#   bash docs/results/cpu-amd-epyc-2t/feature-extraction/run.sh [OUT]
# 1. `slimbench demo --task feature-extraction`: the demo's recipes, benchmarked at batch 1 and 32, 128 tokens
# 2. the search recipe on the same checkpoint and data (its candidates' records in OUT/search/fastest-within-1pct.jsonl)
set -euo pipefail
out="${1:-slimbench-out-embed}"
export HF_HUB_OFFLINE=1
slimbench demo --task feature-extraction --out "$out"
default=$(python3 -c "from slimbench.defaults import default_sentence_encoder as d; print(d(log=lambda *_: None).path)")
slimbench optimize "$default" --recipe fastest-within-1pct --out "$out/search" \
  --train-data "$default/train.jsonl" --eval-data "$default/eval.jsonl" --sample-data "$default/eval.jsonl"
