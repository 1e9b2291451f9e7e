"""Quantization steps. `dynamic-int8`: PyTorch dynamic int8 Linear layers for the CPU.

Weights are int8 per tensor (or per channel), activations are quantized per batch at run
time; the matmuls run in fbgemm (x86) or qnnpack (ARM) int8 kernels.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import torch

from slimbench.registry import register


@dataclass(frozen=True)
class DynamicInt8Config:
    """PyTorch dynamic int8 Linear layers (CPU), saved as TorchScript."""

    engine: Literal["x86", "fbgemm", "qnnpack"] = "x86"
    per_channel: bool = False


@register("dynamic-int8", DynamicInt8Config, takes=("torch",), gives="torch-int8")
def dynamic_int8(model, config: DynamicInt8Config, ctx):
    """PyTorch dynamic int8 Linear layers (CPU int8 GEMM), saved as TorchScript."""
    if config.engine not in torch.backends.quantized.supported_engines:
        raise RuntimeError(
            f"quantized engine {config.engine!r} is not available in this PyTorch build "
            f"(available: {', '.join(torch.backends.quantized.supported_engines)})"
        )
    torch.backends.quantized.engine = config.engine
    qconfig = (
        torch.ao.quantization.per_channel_dynamic_qconfig
        if config.per_channel
        else torch.ao.quantization.default_dynamic_qconfig
    )
    with warnings.catch_warnings():
        # torch.ao eager quantization is deprecated in favour of torchao, whose int8 path has
        # no fast CPU kernel; the eager one is still the fastest int8 CPU path in PyTorch.
        warnings.simplefilter("ignore")
        quantized = torch.ao.quantization.quantize_dynamic(
            model.float().eval(), {torch.nn.Linear: qconfig}, dtype=torch.qint8
        )
    ctx.notes["quantized_engine"] = config.engine
    ctx.notes["dtype"] = "int8"
    return quantized


class LogitsOnly(torch.nn.Module):
    """`(input_ids, attention_mask) -> logits`: the signature the TorchScript artifact exposes."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=False)[0]


def to_torchscript(model, example) -> torch.jit.ScriptModule:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python bools in HF code
        return torch.jit.trace(
            LogitsOnly(model).eval(), (example["input_ids"], example["attention_mask"]), strict=False
        )
