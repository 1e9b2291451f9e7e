"""Load a saved variant with the standard loader of its format, as a deployment would."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slimbench import SlimbenchError
from slimbench.artifacts import TORCHSCRIPT_FILE, read_manifest
from slimbench.checkpoint import auto_class, ort_class


@dataclass
class Loaded:
    manifest: dict
    tokenizer: Any
    forward: Callable[[dict], Any]  # encoded batch -> logits
    return_tensors: str  # what the tokenizer should produce: "pt" or "np"
    to_device: Callable[[dict], dict]
    generate: Callable[[dict, int], Any] | None = None  # causal LM: (prompts, new tokens) -> ids

    def encode(self, texts: list[str], seq_len: int) -> dict:
        enc = self.tokenizer(
            texts,
            max_length=seq_len,
            truncation=True,
            padding="max_length",
            return_tensors=self.return_tensors,
        )
        return self.to_device(dict(enc))

    def logits(self, batch: dict) -> np.ndarray:
        out = self.forward(batch)
        return (
            out.detach().float().cpu().numpy()
            if hasattr(out, "detach")
            else np.asarray(out, dtype=np.float32)
        )


def _logits_of(model):
    import torch

    def forward(batch):
        with torch.inference_mode():
            return model(**batch).logits

    return forward


def _generate_with(model, tokenizer):
    """Greedy decoding of exactly `new_tokens` tokens (the workload's length, whatever is sampled)."""
    import torch

    def generate(batch, new_tokens: int):
        with torch.inference_mode():
            return model.generate(
                **batch,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )

    return generate


def load(model_dir: Path, device: str = "cpu", num_threads: int | None = None) -> Loaded:
    import torch
    from transformers import AutoTokenizer

    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    task, kind = manifest["task"], manifest["kind"]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    causal = task == "causal-lm"
    if causal:
        tokenizer.padding_side = "left"  # prompts end where generation starts
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    if num_threads:
        torch.set_num_threads(num_threads)

    def to_torch(batch):
        return {k: v.to(device) for k, v in batch.items()}

    if kind == "torch":
        # device_map, not .to(): quantized (bitsandbytes) models are placed while loading
        model = auto_class(task).from_pretrained(model_dir, device_map=device).eval()
        gen = _generate_with(model, tokenizer) if causal else None
        return Loaded(manifest, tokenizer, _logits_of(model), "pt", to_torch, gen)
    if kind == "torch-kernels":
        if device != "cuda":
            raise SlimbenchError(
                f"{model_dir}: Triton kernels are measured on a CUDA GPU only (--device cuda)"
            )
        from slimbench.kernels.patch import apply_kernels

        model = auto_class(task).from_pretrained(model_dir, device_map=device).eval()
        apply_kernels(model, **manifest["notes"]["kernels"])
        gen = _generate_with(model, tokenizer) if causal else None
        return Loaded(manifest, tokenizer, _logits_of(model), "pt", to_torch, gen)
    if kind == "torch-int8":
        if causal:
            raise SlimbenchError(f"{model_dir}: a TorchScript (torch-int8) variant cannot generate text")
        if device != "cpu":
            raise SlimbenchError(f"{model_dir}: PyTorch dynamic int8 runs on the CPU only")
        model = torch.jit.load(str(model_dir / TORCHSCRIPT_FILE)).eval()

        def forward(batch):
            with torch.inference_mode():
                return model(batch["input_ids"], batch["attention_mask"])

        return Loaded(manifest, tokenizer, forward, "pt", to_torch)
    if kind == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        provider = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
        model = ort_class(task).from_pretrained(model_dir, provider=provider, session_options=options)
        gen = _generate_with(model, tokenizer) if causal else None
        if device == "cuda":
            return Loaded(manifest, tokenizer, lambda b: model(**b).logits, "pt", to_torch, gen)
        if causal:  # optimum's generate() takes torch tensors, its forward() numpy too
            return Loaded(manifest, tokenizer, lambda b: model(**b).logits, "pt", lambda b: b, gen)
        return Loaded(manifest, tokenizer, lambda b: model(**b).logits, "np", lambda b: b)
    raise SlimbenchError(f"{model_dir}: unknown variant kind {kind!r}")
