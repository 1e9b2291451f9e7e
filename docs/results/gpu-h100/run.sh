#!/usr/bin/env bash
# The GPU measurements of the GPU issues, in stages that each fit a 10-minute call. On the GPU machine,
# from the repository root, after installing the offline bundle (../shared/gpu-bundle/pack.py):
#   bash .gpu/part1/install.sh && bash .gpu/part2/install.sh && export PYTHONPATH=/tmp/site:$PWD
#   bash docs/results/gpu-h100/run.sh STAGE OUT_DIR
# Stages:
#   demo     slimbench demo --device cuda: the default fine-tuned on the GPU, the GPU recipes (fp16, bf16,
#            AOTInductor packages with CUDA graphs, bitsandbytes, torchao, ONNX where the CUDA provider is), bench
#            at batch 1/32/256, report
#   anchor   the plain-PyTorch anchor (fp16/bf16 eager, torch.compile, reduce-overhead) on the demo's baseline
#   kernels  the kernel unit tests natively on the GPU, then the kernel speed suite (CUDA-event timing)
#   variants pytest --benchmark over the demo's variants (pytest-benchmark JSON with slimbench records)
set -euo pipefail
stage=${1:?stage: demo, anchor, kernels or variants}
out=${2:?output directory}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
here=$(dirname "$0")
case "$stage" in
  demo)
    python3 -m slimbench demo --device cuda --out "$out/demo" --batch-sizes 1,32,256 --min-reps 20 2>&1 | tee "$out/demo.log"
    ;;
  anchor)
    eval_data=$(python3 -c "from slimbench.defaults import default_encoder as d; print(d(device='cuda').eval_path)")
    python3 "$here/plain_pytorch_anchor.py" "$out/demo/models/baseline" "$eval_data" "$out/anchor.json" 2>&1 | tee "$out/anchor.log"
    ;;
  kernels)
    python3 -m pytest -p slimbench.bench.plugin -q tests/test_kernels.py tests/test_kernel_patch.py \
      tests/test_kernel_ops.py --kernel-device cuda 2>&1 | tee "$out/kernel-tests.log"
    python3 -m pytest -p slimbench.bench.plugin -q tests/benchmarks --benchmark --slimbench-no-variants \
      --benchmark-json="$out/kernel-speed.json" 2>&1 | tee "$out/kernel-speed.log"
    ;;
  variants)
    python3 -m pytest -p slimbench.bench.plugin -q --benchmark --slimbench-devices cuda \
      --slimbench-batch-sizes 1,32,256 --slimbench-out "$out/suite" --benchmark-json="$out/variants.json" \
      slimbench/bench/suite.py 2>&1 | tee "$out/variants.log"
    ;;
  *)
    echo "unknown stage $stage (demo, anchor, kernels, variants)" >&2
    exit 2
    ;;
esac
