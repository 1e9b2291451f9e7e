"""Quantization steps. `dynamic-int8`: PyTorch dynamic int8 Linear layers for the CPU.

Weights are int8 per tensor (or per channel), activations are quantized per batch at run
time; the matmuls run in fbgemm (x86) or qnnpack (ARM) int8 kernels.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Literal

import torch

from slimbench.backends.base import artifact_inputs
from slimbench.optimize.fallback import Quantizer, accuracy_aware, check_fallback_fields, torch_logits
from slimbench.optimize.registry import register


def linear_layers(model) -> list[str]:
    """Names of the model's nn.Linear modules (what int8 and 4-bit quantizers replace), in order."""
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]


def within(name: str, modules: list[str]) -> bool:
    """Whether module `name` is one of `modules` or inside one of them."""
    return any(name == m or name.startswith(m + ".") for m in modules)


def strided_inputs(model, batch) -> list[str]:
    """The nn.Linear layers whose input arrives as a strided view rather than contiguous rows, on a batch
    of two or more sequences (BERT's pooler takes each sequence's first token, `hidden_states[:, 0]`)."""
    found = []

    def check(name):
        return lambda module, args: None if args[0].is_contiguous() else found.append(name)

    hooks = [
        model.get_submodule(name).register_forward_pre_hook(check(name)) for name in linear_layers(model)
    ]
    try:
        with torch.inference_mode():
            device = next(model.parameters()).device
            model(**{k: v.to(device) for k, v in batch.items()})
    finally:
        for hook in hooks:
            hook.remove()
    return list(dict.fromkeys(found))


@dataclass(frozen=True)
class DynamicInt8Config:
    """PyTorch dynamic int8 Linear layers (CPU), saved as TorchScript."""

    engine: Literal["x86", "fbgemm", "qnnpack"] = "x86"
    per_channel: bool = False
    # keep the most sensitive Linear layers in fp32 until the int8 model keeps this share of the fp32
    # accuracy on labelled data (slimbench.optimize.fallback); null: every Linear in int8
    fallback_budget: float | None = None
    max_fp32_layers: int = 8

    def __post_init__(self):
        check_fallback_fields(self.fallback_budget, self.max_fp32_layers)


@register("dynamic-int8", DynamicInt8Config, takes=("torch",), gives="torch-int8")
def dynamic_int8(model, config: DynamicInt8Config, ctx):
    """PyTorch dynamic int8 Linear layers (CPU int8 GEMM), saved as TorchScript."""
    if ctx.task.generates:
        raise ValueError(
            "dynamic-int8 saves a TorchScript forward pass, which cannot generate text; for a model that "
            "generates use `export: {quantize: dynamic-int8}` (ONNX with KV cache, the onnx-o2-int8 recipe) or "
            "`quantize`"
        )
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
    model = model.float().eval()
    layers = linear_layers(model)

    def build(setting, exclude, only):
        chosen = [n for n in layers if n not in exclude and (only is None or n in only)]
        with warnings.catch_warnings():
            # torch.ao eager quantization is deprecated in favour of torchao, whose int8 path has
            # no fast CPU kernel; the eager one is still the fastest int8 CPU path in PyTorch.
            warnings.simplefilter("ignore")
            return torch.ao.quantization.quantize_dynamic(
                copy.deepcopy(model), dict.fromkeys(chosen, qconfig), dtype=torch.qint8
            )

    if config.fallback_budget is None:
        quantized = build({}, [], None)
    else:
        quantized = accuracy_aware(Quantizer(layers, build, torch_logits), model, ctx, config.fallback_budget,
                                   config.max_fp32_layers, what="torch dynamic int8")  # fmt: skip
    ctx.notes["quantized_engine"] = config.engine
    ctx.notes["dtype"] = "int8"
    ctx.notes["inputs"] = artifact_inputs(quantized, ctx.sample_batch())  # what the TorchScript file takes
    return quantized


BNB_BLOCK = 64  # bitsandbytes 4-bit block size along a Linear layer's input


# torchao schemes that run only on newer GPUs: scheme -> CUDA compute capability
MIN_CAPABILITY = {"float8-dynamic": (8, 9)}


@dataclass(frozen=True)
class QuantizeConfig:
    """bitsandbytes 8/4-bit or torchao weight quantization, through transformers' quantization_config."""

    backend: Literal["bitsandbytes", "torchao"] = "bitsandbytes"
    bits: Literal[4, 8] = 8  # bitsandbytes: LLM.int8 or 4-bit
    llm_int8_threshold: float = 6.0  # bitsandbytes 8-bit: outlier threshold
    quant_type: Literal["nf4", "fp4"] = "nf4"  # bitsandbytes 4-bit
    double_quant: bool = True  # bitsandbytes 4-bit: quantize the scales too
    compute_dtype: Literal["float32", "float16", "bfloat16"] = "float32"  # bitsandbytes 4-bit
    # torchao; float8-dynamic (fp8 activations and weights, per-row scales) needs compute capability 8.9+
    scheme: Literal["int8-weight-only", "int8-dynamic", "int4-weight-only", "float8-dynamic"] = (
        "int8-weight-only"
    )
    group_size: int = 128  # torchao int4
    # keep the most sensitive Linear layers in the compute dtype until the quantized model keeps this share
    # of the unquantized accuracy on labelled data (slimbench.optimize.fallback); null: no fallback
    fallback_budget: float | None = None
    max_fp32_layers: int = 8

    def __post_init__(self):
        check_fallback_fields(self.fallback_budget, self.max_fp32_layers)
        if self.llm_int8_threshold <= 0:
            raise ValueError(f"llm_int8_threshold must be > 0, got {self.llm_int8_threshold}")
        if self.group_size not in (32, 64, 128, 256):
            raise ValueError(f"group_size must be 32, 64, 128 or 256, got {self.group_size}")

    def min_compute_capability(self) -> tuple[int, int] | None:
        """The CUDA compute capability this step and its variant need; None: any device."""
        return MIN_CAPABILITY.get(self.scheme) if self.backend == "torchao" else None

    def transformers_config(self, skip_modules: list[str] | None = None):
        if self.backend == "bitsandbytes":
            from transformers import BitsAndBytesConfig

            if self.bits == 8:
                return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=self.llm_int8_threshold,
                                          llm_int8_skip_modules=skip_modules)  # fmt: skip
            return BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type=self.quant_type,
                bnb_4bit_use_double_quant=self.double_quant,
                bnb_4bit_compute_dtype=getattr(torch, self.compute_dtype),
                llm_int8_skip_modules=skip_modules,
            )
        from torchao.quantization import (
            Float8DynamicActivationFloat8WeightConfig,
            Int4WeightOnlyConfig,
            Int8DynamicActivationInt8WeightConfig,
            Int8WeightOnlyConfig,
            PerRow,
        )
        from transformers import TorchAoConfig

        scheme = {
            "int8-weight-only": Int8WeightOnlyConfig,
            "int8-dynamic": Int8DynamicActivationInt8WeightConfig,
            "int4-weight-only": lambda: Int4WeightOnlyConfig(group_size=self.group_size),
            "float8-dynamic": lambda: Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()),
        }[self.scheme]()
        return TorchAoConfig(quant_type=scheme, modules_to_not_convert=skip_modules)


@register("quantize", QuantizeConfig, takes=("torch",))
def quantize(model, config: QuantizeConfig, ctx):
    """bitsandbytes 8/4-bit or torchao weight quantization; reloads with plain from_pretrained."""

    # transformers quantizes while loading: save what the steps before produced, reload quantized
    best = ctx.work_device()
    need = config.min_compute_capability()
    if best.lacks_capability(need):
        raise RuntimeError(
            f"quantize: torchao {config.scheme} needs a CUDA GPU of compute capability {need[0]}.{need[1]} or newer"
            f" (Ada, Hopper); the best device here is {best} ({best.name()})"
        )
    staged = ctx.workdir / "quantize-source"
    model.save_pretrained(staged, safe_serialization=True)
    device = str(best)
    from transformers.integrations import get_keys_to_not_convert

    base = get_keys_to_not_convert(model)  # what transformers leaves unquantized by default (the head)
    kept: dict[str, str] = {}  # layer -> why it stays unquantized
    if config.backend == "bitsandbytes" and config.bits == 4:
        # bitsandbytes packs 4-bit weights in blocks of 64 along the input; its AVX-512-BF16 CPU kernel
        # fails on layers with fewer (or a remainder), so those stay in the compute dtype
        for n in linear_layers(model):
            if model.get_submodule(n).in_features % BNB_BLOCK:
                kept[n] = f"fewer than {BNB_BLOCK} inputs, or not a multiple (bitsandbytes' 4-bit blocks)"
    if config.backend == "bitsandbytes" and config.bits == 8:
        # bitsandbytes' CUDA int8 quantizer (int8_vectorwise_quant, read in 0.50.2) hands data_ptr() to its
        # kernel, which reads the input as contiguous rows. A strided fp16 input, BERT's pooler on a batch of
        # 2 or more in the fp16 that transformers gives an 8-bit model by default, is read from the wrong
        # rows: sequence i gets token i of the first sequence, and the encoder falls to chance on batches
        # (17% on an H100, where the CPU kernels keep 97.25%). Such layers stay unquantized; the saved
        # llm_int8_skip_modules keep them so on any device and dtype.
        for n in strided_inputs(
            model, ctx.task.compared_inputs(model, ctx.sample_batch(batch_size=2, seq_len=16))[0]
        ):
            if not within(n, base):
                kept[n] = "its input is a strided view, which bitsandbytes' CUDA int8 quantizer misreads"
    if kept:
        base = base + list(kept)
        ctx.notes["not_quantized"] = kept
    layers = [n for n in linear_layers(model) if not within(n, base)]

    def build(setting, exclude, only):
        skip = base + [n for n in layers if n in exclude or (only is not None and n not in only)]
        return (
            ctx.task.auto_class()
            .from_pretrained(
                staged, quantization_config=config.transformers_config(skip), device_map=device, dtype="auto"
            )  # the dtype the steps before left (fp8 computes in bf16)
            .eval()
        )

    what = (
        f"bitsandbytes int{config.bits}" if config.backend == "bitsandbytes" else f"torchao {config.scheme}"
    )
    if config.fallback_budget is None:
        quantized = build({}, [], None)
    else:
        quantized = accuracy_aware(Quantizer(layers, build, torch_logits), model, ctx, config.fallback_budget,
                                   config.max_fp32_layers, what=what)  # fmt: skip
    ctx.notes["dtype"] = f"int{config.bits}" if config.backend == "bitsandbytes" else config.scheme
    ctx.notes["quantization"] = config.backend
    ctx.notes["quantization_device"] = device
    if need:
        ctx.needs_capability(need)
    return quantized
