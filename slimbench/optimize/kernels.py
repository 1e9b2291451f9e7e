"""The `kernels` step: swap slimbench's fused Triton kernels into the model (see slimbench.kernels)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from slimbench.optimize.registry import register

TRITON_MIN_CAPABILITY = (8, 0)


@dataclass(frozen=True)
class KernelsConfig:
    """Fused Triton kernels (norms, activations, attention, weight-only int8/int4 matmul); CUDA GPUs."""

    norm: bool = True
    activation: bool = True
    attention: bool = True
    weight_only: Literal["int8", "int4"] | None = None
    group_size: int = 128
    # on a GPU the loader replays the patched model as one CUDA graph per input shape (see
    # slimbench.backends.triton_kernels): one launch per call instead of one per kernel
    cuda_graphs: bool = True

    def min_compute_capability(self) -> tuple[int, int]:
        """Triton's NVIDIA backend runs on compute capability 8.0+ (the step itself runs anywhere)."""
        return TRITON_MIN_CAPABILITY

    def __post_init__(self):
        if self.group_size not in (32, 64, 128, 256):
            raise ValueError(f"group_size must be 32, 64, 128 or 256, got {self.group_size}")
        if not (self.norm or self.activation or self.attention or self.weight_only):
            raise ValueError("kernels: every option is off; turn on at least one")


@register("kernels", KernelsConfig, takes=("torch",), gives="torch-kernels")
def kernels(model, config: KernelsConfig, ctx):
    """Fused Triton kernels (norms, activations, attention, W8A16/W4A16); re-applied after loading."""
    from slimbench.kernels.patch import apply_kernels

    options = {k: v for k, v in asdict(config).items() if k != "cuda_graphs"}
    replaced = apply_kernels(model, **options)
    ctx.notes["kernels"] = options  # what a deployment passes to apply_kernels
    ctx.notes["cuda_graphs"] = config.cuda_graphs
    ctx.needs_capability(config.min_compute_capability())
    ctx.notes["kernels_replaced"] = len(replaced)
    if config.weight_only:
        ctx.notes["dtype"] = f"{config.weight_only}-weight-only"
    return model
