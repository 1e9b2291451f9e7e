"""The fused kernels as torch.library custom ops (`torch.ops.slimbench.*`): torch.compile and CUDA
graphs capture them as single opaque calls instead of breaking the graph at a Triton launch. Each
op's fake (meta) implementation is its PyTorch reference run on fake tensors, so shapes and dtypes
can never disagree with the reference the unit tests hold the kernel to. The patch layer calls these."""

import torch
from torch import Tensor

from slimbench.kernels import activations, attention, layer_norm
from slimbench.kernels import rms_norm as rms
from slimbench.kernels.quant_matmul import weight_only_matmul_op as weight_only_matmul

# no `from __future__ import annotations` here: torch.library reads the annotations as types


@torch.library.custom_op("slimbench::add_layer_norm", mutates_args=())
def add_layer_norm(
    x: Tensor, residual: Tensor | None, weight: Tensor, bias: Tensor | None, eps: float
) -> Tensor:
    return layer_norm.add_layer_norm(x, residual, weight, bias, eps)


@torch.library.custom_op("slimbench::rms_norm", mutates_args=())
def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    return rms.rms_norm(x, weight, eps)


@torch.library.custom_op("slimbench::bias_gelu", mutates_args=())
def bias_gelu(x: Tensor, bias: Tensor, approximate: str = "none") -> Tensor:
    return activations.bias_gelu(x, bias, approximate)


@torch.library.custom_op("slimbench::swiglu", mutates_args=())
def swiglu(gate: Tensor, up: Tensor) -> Tensor:
    return activations.swiglu(gate, up)


@torch.library.custom_op("slimbench::flash_attention", mutates_args=())
def flash_attention(q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None, causal: bool,
                    sm_scale: float) -> Tensor:  # fmt: skip
    return attention.flash_attention(q, k, v, key_padding_mask, causal, sm_scale)


add_layer_norm.register_fake(layer_norm.reference)
rms_norm.register_fake(rms.reference)
bias_gelu.register_fake(activations.bias_gelu_reference)
swiglu.register_fake(activations.swiglu_reference)
flash_attention.register_fake(attention.reference)

__all__ = ["add_layer_norm", "bias_gelu", "flash_attention", "rms_norm", "swiglu", "weight_only_matmul"]
