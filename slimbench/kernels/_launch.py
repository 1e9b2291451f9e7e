"""When the Triton kernels run: on CUDA tensors, or anywhere under TRITON_INTERPRET=1 (the
CPU interpreter, for correctness tests). Elsewhere the PyTorch reference runs instead."""

import functools
import os

import torch


def use_triton(*tensors: torch.Tensor) -> bool:
    if interpreting():
        return True
    return all(t.is_cuda for t in tensors)


def row_launch(n: int) -> dict:
    """Block and warps for a kernel that reduces one row of n per program: the whole row in one
    block, more warps as rows grow so each thread holds a few vectors (the rule Liger-Kernel's norms use)."""
    import triton

    block = triton.next_power_of_2(n)
    warps = 32 if block >= 32768 else 16 if block >= 8192 else 8 if block >= 2048 else 4
    return {"BLOCK": block, "num_warps": warps}


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def f32_dot(dtype: torch.dtype) -> bool:
    """Run tl.dot in fp32 (IEEE): for fp32 inputs, and under the interpreter, whose bf16
    arithmetic is not faithful. On a GPU, fp16/bf16 inputs use the tensor cores."""
    return dtype == torch.float32 or interpreting()


@functools.cache
def sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def splits_to_fill(programs: int, length: int, min_share: int, device: torch.device) -> int:
    """How many ways to split a reduction of `length` (split-K, split-KV) when a launch would have
    `programs` programs: the smallest power of two that gives the GPU at least one program per SM,
    while each split keeps at least `min_share`; 1 off CUDA."""
    if device.type != "cuda":
        return 1
    split = 1
    while programs * split < sm_count(device) and length // (2 * split) >= min_share:
        split *= 2
    return split


def chosen_launch(autotuned) -> dict:
    """The tile sizes, warps and stages a Triton autotuner chose in its last launch (empty before one)."""
    config = getattr(autotuned, "best_config", None)
    return (
        {}
        if config is None
        else {**config.kwargs, "num_warps": config.num_warps, "num_stages": config.num_stages}
    )


def autotuned(kernel, configs: list, key: list[str], prune=None, **options):
    """`kernel` under Triton's autotuner: `prune(configs, named_args, **kwargs)` keeps the configs
    worth timing for a launch; the choice per key is kept in Triton's cache directory, so later
    processes do not tune again. Under the interpreter the first kept config runs, neither timed nor
    cached: some Triton versions (3.6, the GPU machines') time even a lone config and key the cache
    by the GPU driver, which the interpreter has not."""
    import triton

    def early_prune(configs, named_args, **kwargs):
        kept = prune(configs, named_args, **kwargs) if prune else configs
        return kept[:1] if interpreting() else kept

    tuning = {"cache_results": not interpreting()}
    if interpreting():
        tuning["do_bench"] = lambda kernel_call, quantiles: [0.0] * len(quantiles)
    return triton.autotune(configs=configs, key=key, prune_configs_by={"early_config_prune": early_prune},
                           **tuning, **options)(kernel)  # fmt: skip
