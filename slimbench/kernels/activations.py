"""Bias + GELU (BERT FFN: exact erf GELU; GPT-2 MLP: tanh approximation) and SwiGLU (Llama MLP:
silu(gate) * up), forward. Elementwise: the block each program covers and its warps are autotuned
per size (a power of two of the element count) on the GPU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from slimbench.kernels._launch import autotuned, use_triton


@triton.jit
def _bias_gelu_kernel(X, B, Y, numel, N, NUMEL_BUCKET, TANH: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    x += tl.load(B + offs % N, mask=mask, other=0.0).to(tl.float32)
    if TANH:  # 0.5 x (1 + tanh(u)) = x sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3)
        u = 0.7978845608028654 * (x + 0.044715 * x * x * x)
        y = x / (1.0 + tl.exp(tl.minimum(-2.0 * u, 80.0)))  # capped: no overflow, same limit
    else:
        y = 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))
    tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _swiglu_kernel(G, U, Y, numel, NUMEL_BUCKET, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    g = tl.load(G + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(U + offs, mask=mask, other=0.0).to(tl.float32)
    silu = (g / (1.0 + tl.exp(-g))).to(U.dtype.element_ty).to(tl.float32)  # as F.silu: computed, then cast
    tl.store(Y + offs, (silu * u).to(Y.dtype.element_ty), mask=mask)


# (BLOCK, warps); the first is what the interpreter runs
BLOCKS = [
    triton.Config({"BLOCK": block}, num_warps=warps)
    for block, warps in [(1024, 4), (2048, 4), (4096, 8), (8192, 8)]
]
_tuned_bias_gelu = autotuned(_bias_gelu_kernel, BLOCKS, key=["NUMEL_BUCKET", "N", "TANH"])
_tuned_swiglu = autotuned(_swiglu_kernel, BLOCKS, key=["NUMEL_BUCKET"])


def _grid(numel):
    return lambda c: (triton.cdiv(numel, c["BLOCK"]),)


def bias_gelu(x, bias, approximate: str = "none"):
    """gelu(x + bias), bias broadcast over the last dimension; approximate "tanh" as GPT-2's gelu_new."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    if not use_triton(x):
        return bias_gelu_reference(x, bias, approximate)
    x = x.contiguous()
    y = torch.empty_like(x)
    n = x.numel()
    _tuned_bias_gelu[_grid(n)](
        x, bias, y, n, x.shape[-1], triton.next_power_of_2(n), TANH=approximate == "tanh"
    )
    return y


def swiglu(gate, up):
    if not use_triton(gate):
        return swiglu_reference(gate, up)
    gate, up = gate.contiguous(), up.contiguous()
    y = torch.empty_like(up)
    n = up.numel()
    _tuned_swiglu[_grid(n)](gate, up, y, n, triton.next_power_of_2(n))
    return y


def bias_gelu_reference(x, bias, approximate: str = "none"):
    return F.gelu(x.float() + bias.float(), approximate=approximate).to(x.dtype)


def swiglu_reference(gate, up):
    return F.silu(gate) * up
