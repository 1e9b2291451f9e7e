"""When the Triton kernels run: on CUDA tensors, or anywhere under TRITON_INTERPRET=1 (the
CPU interpreter, for correctness tests). Elsewhere the PyTorch reference runs instead."""

import os

import torch


def use_triton(*tensors: torch.Tensor) -> bool:
    if interpreting():
        return True
    return all(t.is_cuda for t in tensors)


def row_block(n: int) -> int:
    import triton

    return triton.next_power_of_2(n)


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def f32_dot(dtype: torch.dtype) -> bool:
    """Run tl.dot in fp32 (IEEE): for fp32 inputs, and under the interpreter, whose bf16
    arithmetic is not faithful. On a GPU, fp16/bf16 inputs use the tensor cores."""
    return dtype == torch.float32 or interpreting()
