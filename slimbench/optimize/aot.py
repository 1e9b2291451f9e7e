"""The `compile` step: torch.export + AOTInductor. The model's forward pass, `(input_ids,
attention_mask[, token_type_ids]) -> logits` taken by name (`model(**enc)`), is exported with a dynamic
batch and sequence length and compiled ahead of time into one package, `model.pt2`, for one device: a
deployment loads it with
`torch._inductor.aoti_load_package` in a process that needs neither slimbench nor transformers.

On a GPU the loader can also replay the compiled call as a CUDA graph per input shape (the idea
of torch.compile's "reduce-overhead"), removing the launch cost that dominates small batches.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from slimbench.backends.aoti import PACKAGE_FILE
from slimbench.backends.base import LogitsOnly, artifact_inputs
from slimbench.optimize.registry import register


@dataclass(frozen=True)
class CompileConfig:
    """AOTInductor package for one device, dynamic batch and sequence length."""

    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: the GPU where there is one, else the CPU
    max_batch: int = 1024
    max_seq_len: int = 512
    cuda_graphs: bool = True  # on a GPU, replay each input shape as a CUDA graph

    def __post_init__(self):
        if self.max_batch < 2:
            raise ValueError(f"max_batch must be >= 2, got {self.max_batch}")
        if self.max_seq_len < 8:
            raise ValueError(f"max_seq_len must be >= 8, got {self.max_seq_len}")


@dataclass
class CompiledPackage:
    """What the step hands on: the package file (in the recipe's scratch space), the config of the
    model it was compiled from, the inputs it takes by name, and the package loaded."""

    path: Path
    config: object
    inputs: list[str]
    runner: object

    def __call__(self, **batch):
        return self.runner(**{name: batch[name] for name in self.inputs})


@register("compile", CompileConfig, takes=("torch",), gives="torch-aoti")
def compile_aot(model, config: CompileConfig, ctx):
    """torch.export + AOTInductor: one compiled .pt2 package (dynamic batch and length) for a device."""
    from slimbench.backends import Device

    if ctx.task.generates:
        raise ValueError(
            "compile exports one forward pass; generation with a compiled decode step is not built yet"
        )
    if getattr(model.config, "quantization_config", None) is not None:
        raise ValueError("compile: the model is quantized by bitsandbytes/torchao; compile before quantizing")
    device = ctx.work_device() if config.device == "auto" else Device(config.device).require()
    max_seq = min(config.max_seq_len, getattr(model.config, "max_position_embeddings", config.max_seq_len))
    example = ctx.sample_batch(batch_size=2, seq_len=16)
    inputs = artifact_inputs(model, example)
    kwargs = {name: example[name].to(str(device)) for name in inputs}
    module = LogitsOnly(model.to(str(device)).eval())
    batch = torch.export.Dim("batch", min=1, max=config.max_batch)
    seq = torch.export.Dim("seq", min=2, max=max_seq)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shapes = {name: {0: batch, 1: seq} for name in inputs}
        exported = torch.export.export(module, (), kwargs, dynamic_shapes=shapes, strict=False)
        path = torch._inductor.aoti_compile_and_package(
            exported, package_path=str(ctx.workdir / PACKAGE_FILE)
        )
    ctx.notes["compiled_for"] = device.type
    ctx.notes["compiled_shapes"] = {"max_batch": config.max_batch, "max_seq_len": max_seq}
    ctx.notes["cuda_graphs"] = config.cuda_graphs and device.is_cuda
    ctx.notes["dtype"] = str(next(model.parameters()).dtype).removeprefix("torch.")
    ctx.notes["inputs"] = inputs
    return CompiledPackage(Path(path), model.config, inputs, torch._inductor.aoti_load_package(path))
