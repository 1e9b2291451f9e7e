#!/usr/bin/env bash
# The GPU measurements of the GPU issues as one prepared run that fits a short lease (one command of at most
# 10 minutes). On the GPU machine, from the repository root, with the offline bundle (../shared/gpu-bundle/pack.py)
# installed into /tmp/site (part2 in a first short call, part1 in the call that runs this, while the machine is warm):
#   bash .gpu/part1/install.sh && export PYTHONPATH=/tmp/site:$PWD
#   bash docs/results/gpu/run.sh OUT_DIR SECONDS [STAGE ...]
# Stages run in the order given (default: core anchor decoder bnbprobe more), each cut at the seconds left; what a stage finished is
# kept (the bench resumes), and OUT_DIR gets flat files only, refreshed after every stage, at most 8 of them in one call (the
# most a lease returns; the reports are made from the records with `slimbench report` once they are back):
#   env.txt        GPU, driver, torch, Triton, transformers
#   results.jsonl  slimbench records of the demo's variants (batch 1/32/256, seq 128)
#   results-lm.jsonl  the decoder default's (128-token prompts + 32 greedy tokens, batch 1/32)
#   anchor.json    plain PyTorch on the same GPU: fp32 eager and fp16 + torch.compile(mode="reduce-overhead")
#   bnb-probe.json where bitsandbytes int8 loses the encoder: in memory, saved and reloaded, threshold 0, from fp16
#   kernel-speed.json, kernel-tests.log   the kernel suite (CUDA-event timing) and the kernel unit tests on the GPU
#   variants.json  pytest --benchmark over the demo's variants (pytest-benchmark JSON with slimbench records)
#   search.jsonl   fastest-within-1pct-gpu's candidates on the demo's default (its winner's line is in run.log)
#   run.log        everything printed
# Stages:
#   core     the default fine-tuned on the GPU; baseline, fp16, bf16-compiled, pruned-l2-bf16-compiled; bench
#   anchor   the plain-PyTorch anchor on the demo's baseline
#   decoder  the decoder default trained on the GPU; baseline, bf16-static-cache, bf16, fp8; bench at batch 1/32
#   bnbprobe slimbench's bnb-int8 of the demo's baseline, then bnb_int8_probe.py on both (needs bundle part 2)
#   more     fp8, sparse-2of4-bf16, kernels-bf16, bnb-int8, bnb-nf4, torchao-int8wo, bf16, compiled, onnx-o2 into the same results
#   kernels  the kernel unit tests natively on the GPU, then the kernel speed suite
#   kernels-speed  the kernel speed suite alone, #11's targets first (weight-only matmuls, attention)
#   variants pytest --benchmark over the demo's variants
#   search   fastest-within-1pct-gpu on the default (the demo's fine-tuning): pruned and half-precision compiled
#            candidates, most pruned first, measured on the GPU at batch 32
# With PLAN_DRY_RUN=1 the same commands run on the CPU at batch 1 with few repetitions, a check before a lease that
# every stage's path runs in the GPU machine's software (`tox -e gpu-twin`'s environment); its figures mean nothing.
# PLAN_WORK: where the variants are built (default /tmp/slimbench-gpu); a rerun with the same one resumes.
set -uo pipefail
out=${1:?output directory}
budget=${2:?seconds this run may take}
shift 2
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(core anchor decoder bnbprobe more)
mkdir -p "$out"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
here=$(dirname "$0")
work=${PLAN_WORK:-/tmp/slimbench-gpu}  # variants stay off OUT_DIR: only the flat files above come back
# the device, the encoder's and the decoder's batch sizes and their minimum repetitions
read -r device enc_batches lm_batches enc_reps lm_reps <<<"cuda 1,32,256 1,32 20 10"
[ "${PLAN_DRY_RUN:-0}" = 1 ] && read -r device enc_batches lm_batches enc_reps lm_reps <<<"cpu 1 1 5 3"
demo=(python3 -m slimbench demo --device "$device" --out "$work/demo" --batch-sizes "$enc_batches" --min-reps "$enc_reps")
deadline=$((SECONDS + budget))
log="$out/run.log"

default_file() { python3 -c "from slimbench.defaults import default_encoder as d; print(d(device='$device').$1)"; }
eval_data() { default_file eval_path; }
left() { echo $((deadline - SECONDS - 15)); }  # 15 s kept for the last copy
# `-p slimbench.bench.plugin` where slimbench is on PYTHONPATH only; pip's install registers the plugin itself
plugin=(-p slimbench.bench.plugin)
python3 -c "import importlib.metadata as m; exit(all(e.name != 'slimbench' for e in m.entry_points(group='pytest11')))" \
  && plugin=()
# pytest is stopped with SIGINT, on which it still ends its session: pytest-benchmark then writes the JSON of
# every case that finished (a case cut short is in it with the rounds it ran)
pytest_for() { timeout -s INT -k 20 "$1" python3 -m pytest "${plugin[@]}" "${@:2}"; }

# the kernel speed suite, #11's targets first: what a cut run leaves out is what matters least
speed=tests/benchmarks/test_kernel_speed.py
speed_cases=()
for name in weight_only_matmul attention decode_attention minilm_forward llama_300m_forward add_layer_norm \
  rms_norm swiglu bias_gelu; do
  speed_cases+=("$speed::test_${name}_speed")
done
kernel_speed() {
  pytest_for "$(left)" -q "${speed_cases[@]}" --benchmark --slimbench-no-variants \
    --benchmark-json="$out/kernel-speed.json"
}

# the records only: the reports are made from them once they are back, off the lease's time
collect() {
  cp "$work/demo/results.jsonl" "$out/" 2>/dev/null
  cp "$work/demo-lm/results.jsonl" "$out/results-lm.jsonl" 2>/dev/null
}

run_stage() {
  local stage=$1 limit
  limit=$(left)
  if [ "$limit" -lt 30 ]; then
    echo "== $stage: not started, ${limit}s left" | tee -a "$log"
    return
  fi
  echo "== $stage ($(date -u +%T), ${limit}s left)" | tee -a "$log"
  case "$stage" in
    core)
      timeout "$limit" "${demo[@]}" --recipes baseline,fp16,bf16-compiled,pruned-l2-bf16-compiled ;;
    decoder)
      timeout "$limit" python3 -m slimbench demo --task causal-lm --device "$device" --out "$work/demo-lm" \
        --batch-sizes "$lm_batches" --min-reps "$lm_reps" --recipes baseline,bf16-static-cache,bf16,fp8,kernels-int4-bf16 ;;
    anchor)
      if [ "$device" = cuda ]; then
        timeout "$limit" python3 "$here/plain_pytorch_anchor.py" "$work/demo/models/baseline" "$(eval_data)" \
          "$out/anchor.json" --configs fp32,fp16-compile-reduce-overhead
      else
        echo "the anchor times CUDA only: not run on $device"
      fi ;;
    bnbprobe)
      timeout $((limit / 3)) python3 -m slimbench optimize "$work/demo/models/baseline" --recipe bnb-int8 --out "$work/bnb"
      timeout "$(left)" python3 "$here/bnb_int8_probe.py" "$work/demo/models/baseline" "$(eval_data)" \
        "$out/bnb-probe.json" --variant "$work/bnb/bnb-int8" ;;
    more)
      timeout "$limit" "${demo[@]}" \
        --recipes fp8,sparse-2of4-bf16,kernels-bf16,bnb-int8,bnb-nf4,torchao-int8wo,bf16,compiled,onnx-o2 ;;
    kernels)
      pytest_for "$limit" -q -x tests/test_kernels.py tests/test_kernel_patch.py tests/test_kernel_ops.py \
        --kernel-device "$device" >"$out/kernel-tests.log" 2>&1
      tail -3 "$out/kernel-tests.log"
      kernel_speed ;;
    kernels-speed)
      kernel_speed ;;
    variants)
      pytest_for "$limit" -q --benchmark --slimbench-devices "$device" \
        --slimbench-batch-sizes "$enc_batches" --slimbench-out "$work/suite" --benchmark-json="$out/variants.json" \
        slimbench/bench/suite.py ;;
    search)
      timeout "$limit" python3 -m slimbench optimize "$(default_file path)" --recipe fastest-within-1pct-gpu \
        --device "$device" --train-data "$(default_file train_path)" --eval-data "$(eval_data)" --out "$work/search"
      status=$?  # the search's, not the copy's: its records are kept whether it chose or not
      cp "$work/search/fastest-within-1pct-gpu.jsonl" "$out/search.jsonl" 2>/dev/null
      (exit $status) ;;
    *)
      echo "unknown stage $stage (core, anchor, decoder, bnbprobe, more, kernels, kernels-speed, variants, search)" ;;
  esac 2>&1 | tee -a "$log"
  echo "== $stage: exit ${PIPESTATUS[0]} ($(date -u +%T))" | tee -a "$log"
  collect
}

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv
  python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'triton', triton.__version__, 'transformers', transformers.__version__)"
} >"$out/env.txt" 2>&1
cat "$out/env.txt" | tee -a "$log"
for stage in "${stages[@]}"; do
  run_stage "$stage"
done
n=$(find "$out" -maxdepth 1 -type f | wc -l)
[ "$n" -le 8 ] || echo "$n files in $out, a lease returns 8: run fewer stages in one call" | tee -a "$log"
