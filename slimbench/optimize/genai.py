"""Causal LMs as ONNX Runtime GenAI models, built by onnxruntime-genai's own model builder: attention
as GroupQueryAttention over a KV cache that ONNX Runtime GenAI writes in place (past and present share
one buffer), and the LM head applied to the last position only in the prefill. At batch 32 these are
the two costs that dominate an optimum graph driven by transformers' generate(): the copy of the whole
cache at every token, and a prefill that projects every position onto the vocabulary."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from slimbench.backends import Device
from slimbench.backends.genai import CONFIG, all_logits, every_position, head_size
from slimbench.backends.ort import session_options
from slimbench.optimize.export import _quantize_dynamic
from slimbench.optimize.registry import register

BLOCK_SIZES = (16, 32, 64, 128, 256)


@dataclass(frozen=True)
class GenAIConfig:
    """An ONNX Runtime GenAI model (onnxruntime-genai's builder), optionally ORT dynamic int8."""

    # the builder's precision: int8 / int4 are weight-only (MatMulNBits); fp16 needs CUDA
    precision: Literal["fp32", "fp16", "int8", "int4"] = "fp32"
    # ORT dynamic int8 of an fp32 CPU build: weights and activations in int8 (MatMulInteger)
    quantize: Literal["dynamic-int8"] | None = None
    per_channel: bool = False
    execution_provider: Literal["cpu", "cuda"] = "cpu"
    block_size: int = 32  # precision int8 / int4: weights per scale
    # max |logit difference| against the PyTorch model at real tokens, checked on the fp32 / fp16 build
    parity_atol: float = 1e-3

    def __post_init__(self):
        if self.quantize and (self.precision != "fp32" or self.execution_provider != "cpu"):
            raise ValueError("quantize dynamic-int8 applies to precision fp32 on execution_provider cpu")
        if self.precision == "fp16" and self.execution_provider != "cuda":
            raise ValueError(
                "precision fp16 needs execution_provider cuda (ONNX Runtime's CPU kernels are fp32)"
            )
        if self.block_size not in BLOCK_SIZES:
            raise ValueError(
                f"block_size must be one of {', '.join(map(str, BLOCK_SIZES))}, got {self.block_size}"
            )
        if self.parity_atol <= 0:
            raise ValueError(f"parity_atol must be > 0, got {self.parity_atol}")


def build(hf_dir: Path, out: Path, config: GenAIConfig, cache: Path) -> Path:
    """onnxruntime-genai's builder on a saved transformers checkpoint, the LM head pruned to the last
    position. Run as its command line in a child process: it prints a line per weight."""
    options = ["prune_lm_head=true"]
    if config.precision in ("int8", "int4"):
        options.append(f"block_size={config.block_size}")
    command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf_dir), "-o", str(out),
               "-p", config.precision, "-e", config.execution_provider, "-c", str(cache),
               "--extra_options", *options]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0 or not (out / CONFIG).is_file():
        output = proc.stderr + proc.stdout
        if "model is not currently supported" in output:  # the builder names the temporary checkpoint's path
            architecture = json.loads((hf_dir / "config.json").read_text())["architectures"][0]
            raise RuntimeError(f"onnxruntime-genai's builder does not build {architecture} models; the `onnx` "
                               "recipe exports the model with its KV cache for ONNX Runtime")  # fmt: skip
        lines = [line for line in output.splitlines() if line.strip()]
        raise RuntimeError("onnxruntime-genai's builder failed: " + " | ".join(lines[-3:]))
    return out


def right_padded(ctx, batch_size: int = 4, seq_len: int = 64) -> dict:
    """The sample batch, right-padded: real tokens at positions 0.. in both PyTorch and the GenAI graph."""
    tokenizer = ctx.tokenizer
    side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        return ctx.sample_batch(batch_size, seq_len)
    finally:
        tokenizer.padding_side = side


@register("genai", GenAIConfig, takes=("torch",), gives="onnx-genai", tasks=("causal-lm",))
def genai(model, config: GenAIConfig, ctx):
    """ONNX Runtime GenAI model: KV cache written in place, last-position prefill; optional ORT dynamic int8."""
    import onnxruntime as ort

    if config.execution_provider == "cuda" and Device("cuda").unavailable():
        raise RuntimeError(
            f"genai: execution_provider cuda needs a CUDA GPU ({Device('cuda').unavailable()})"
        )
    work = ctx.workdir / "genai"
    shutil.rmtree(work, ignore_errors=True)
    hf = work / "checkpoint"
    model.save_pretrained(hf)
    ctx.tokenizer.save_pretrained(hf)
    current = build(hf, work / "built", config, work / "cache")
    for name in (
        "config.json",
        "generation_config.json",
    ):  # the transformers config rides along (labels, ids)
        if (hf / name).is_file():
            shutil.copy2(hf / name, current / name)
    ctx.notes["genai_execution_provider"] = config.execution_provider
    ctx.notes["genai_precision"] = config.precision
    ctx.notes["logits_to_keep"] = 1

    batch = right_padded(ctx)
    real = batch["attention_mask"].bool()
    with torch.inference_mode():
        reference = model(**batch).logits.float()
    providers = ["CUDAExecutionProvider"] if config.execution_provider == "cuda" else ["CPUExecutionProvider"]

    def parity(path: Path) -> float:
        with tempfile.TemporaryDirectory(prefix="slimbench-genai-") as scratch:
            session = ort.InferenceSession(str(every_position(path / "model.onnx", Path(scratch))),
                                           session_options(), providers=providers)  # fmt: skip
            got = all_logits(
                session, head_size(path), batch["input_ids"].numpy(), batch["attention_mask"].numpy()
            )
        return float((torch.from_numpy(np.asarray(got, dtype=np.float32)) - reference).abs()[real].max())

    diff = parity(current)
    if config.precision in ("fp32", "fp16"):
        ctx.notes["export_parity_max_abs_logit_diff"] = diff
        if diff > config.parity_atol:
            raise RuntimeError(
                f"GenAI logits differ from PyTorch by {diff:.3g} > parity_atol {config.parity_atol:g}"
            )
    else:  # weight-only int8 / int4: the difference is recorded, not checked
        ctx.notes["dtype"] = config.precision
        ctx.notes[f"{config.precision}_max_abs_logit_diff"] = diff
    if config.precision == "fp16":
        ctx.notes["dtype"] = "float16"
    if config.quantize:
        quantized = _quantize_dynamic(current, work / "quantized", config.per_channel)
        for f in current.iterdir():  # the tokenizer and anything else the builder wrote beside the graph
            if not (quantized / f.name).exists() and not f.name.startswith("model.onnx"):
                shutil.copy2(f, quantized / f.name)
        current = quantized
        ctx.notes["dtype"] = "int8"
        ctx.notes["int8_max_abs_logit_diff"] = parity(current)
    return current
