"""The `precision` step: the whole model cast to fp16 or bf16, saved in that dtype (config.json's
`torch_dtype`), so `from_pretrained(..., dtype="auto")` reloads it as it was measured.

Half precision halves the weights' bytes and runs the matmuls on tensor cores; norms and softmax
stay accurate because PyTorch's kernels accumulate them in fp32 whatever the storage dtype. No
layer is kept in fp32: `from_pretrained(..., dtype="auto")` casts every weight to the config's one
dtype, so a deployment would not get such a layer back; the agreement check after `optimize` is
what guards the accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from slimbench.optimize.registry import register


@dataclass(frozen=True)
class PrecisionConfig:
    """Cast the weights to fp16 or bf16."""

    dtype: Literal["float16", "bfloat16"] = "bfloat16"


@register("precision", PrecisionConfig, takes=("torch",))
def precision(model, config: PrecisionConfig, ctx):
    """Cast the model to fp16 or bf16 (saved in that dtype; tensor cores on GPUs)."""
    if getattr(model.config, "quantization_config", None) is not None:
        raise ValueError("precision: the model is already quantized; cast before the quantize step")
    model = model.to(getattr(torch, config.dtype))
    ctx.notes["dtype"] = config.dtype
    return model
