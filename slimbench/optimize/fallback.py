"""Accuracy-aware quantization, the "fallback" strategy of Intel Neural Compressor, for every quantizer
slimbench has (ORT dynamic and static int8, PyTorch dynamic int8, torchao, bitsandbytes).

1. Quantize every layer with each setting in `settings` (calibration choices for static int8), cheapest
   first, until one keeps `budget` of the unquantized model's accuracy on labelled data.
2. If none does: measure what each layer costs on its own (that layer alone quantized, logit error against
   the unquantized model on a calibration slice) under the best setting, then keep the most sensitive
   layers in higher precision, one at a time, until the budget holds (at most `max_fp32_layers`).

A quantizer is two functions: `build(setting, exclude, only)` -> a model handle with every layer but
`exclude` quantized (or only `only`), and `logits(handle, encodings)`. The manifest (`notes.fallback`)
records the settings tried, the layers left in higher precision, every sensitivity and the accuracy after
each step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from slimbench.backends.base import scores
from slimbench.core.data import encode_labelled

MAX_SAMPLES = 512  # labelled examples scored per candidate (evenly spaced over the data)
CALIBRATION = 32  # of those, the ones each layer's sensitivity is measured on
MAX_LENGTH = 128  # tokens per example


@dataclass
class Quantizer:
    """One quantizer seen by the fallback loop."""

    layers: list[str]  # what may stay in higher precision, in model order
    build: Callable[..., Any]  # (setting: dict, exclude: list[str], only: list[str] | None) -> handle
    logits: Callable[[Any, dict], np.ndarray]  # (handle, numpy encodings) -> [n, labels]
    settings: tuple[dict, ...] = ({},)  # tried in this order (cheapest first) before any layer falls back


def check_fallback_fields(budget: float | None, max_fp32_layers: int) -> None:
    """The two recipe fields every quantizing step takes, validated alike."""
    if budget is not None and not 0 < budget <= 1:
        raise ValueError(f"fallback_budget must be in (0, 1], got {budget}")
    if max_fp32_layers < 1:
        raise ValueError(f"max_fp32_layers must be >= 1, got {max_fp32_layers}")


def labelled_encodings(ctx) -> tuple[dict, np.ndarray, str]:
    """Up to MAX_SAMPLES labelled examples (eval data, else training data), tokenized as numpy, and their
    targets: a label per text, or a tag per token (NO_TARGET where no word starts)."""
    data, source = (ctx.eval_data, "eval") if ctx.eval_data is not None else (ctx.train_data, "train")
    if data is None:
        raise ValueError("fallback_budget needs labelled data: pass --eval-data (or --train-data)")
    if data.labels is None:
        raise ValueError(f"fallback_budget scores labels or tags, which {ctx.task.name} data does not have")
    picked = np.linspace(0, len(data) - 1, min(len(data), MAX_SAMPLES)).round().astype(int).tolist()
    enc, targets = encode_labelled(ctx.tokenizer, data.select(picked), MAX_LENGTH, padding="longest")
    return {k: v.numpy() for k, v in enc.items()}, targets.numpy(), source


def rows(enc: dict, selection: slice) -> dict:
    return {k: v[selection] for k, v in enc.items()}


def torch_logits(model, enc: dict, batch_size: int = 32) -> np.ndarray:
    """Logits of a PyTorch classifier (quantized or not) on numpy encodings, on the model's device."""
    import torch

    names = ("input_ids", "attention_mask", "token_type_ids")
    device = getattr(model, "device", "cpu")  # a quantized transformers model may sit on the GPU
    out = []
    with torch.inference_mode():
        for i in range(0, len(enc["input_ids"]), batch_size):
            batch = {k: torch.from_numpy(enc[k][i : i + batch_size]).to(device) for k in names if k in enc}
            out.append(scores(model(**batch)).float().cpu().numpy())
    return np.concatenate(out)


def accuracy_aware(quantizer: Quantizer, reference_handle, ctx, budget: float, max_fp32_layers: int,
                   what: str = "int8") -> Any:  # fmt: skip
    """The quantized handle that keeps `budget` of `reference_handle`'s accuracy; raises ValueError naming
    what was tried where nothing does. Records `notes.fallback` in the manifest."""
    enc, labels, source = labelled_encodings(ctx)

    def share_right(outputs) -> float:
        return ctx.task.share_right(outputs, labels, enc["attention_mask"], ctx.checkpoint.path)

    def accuracy(handle) -> float:
        return share_right(quantizer.logits(handle, enc))

    reference = quantizer.logits(reference_handle, enc)
    fp32_accuracy = share_right(reference)
    target = budget * fp32_accuracy
    notes: dict[str, Any] = {"quantization": what, "budget": budget, "data": source, "samples": len(labels),
                             "fp32_accuracy": fp32_accuracy, "settings_tried": [], "fp32_layers": [], "steps": []}  # fmt: skip
    best = None
    for setting in quantizer.settings:
        handle = quantizer.build(setting, exclude=[], only=None)
        acc = accuracy(handle)
        notes["settings_tried"].append({**setting, "accuracy": acc})
        if best is None or acc > best[1]:
            best = (setting, acc, handle)
        if acc >= target:
            break
    setting, acc, current = best
    notes["setting"] = setting
    notes["quantized_everywhere_accuracy"] = acc
    if acc < target:
        calibration = slice(0, min(CALIBRATION, len(labels)))
        calib_enc, calib_ref = rows(enc, calibration), reference[calibration]
        sensitivity = {}
        for layer in tqdm(quantizer.layers, desc=f"{what} sensitivity", unit="layer"):
            probe = quantizer.build(setting, exclude=[], only=[layer])
            sensitivity[layer] = float(((quantizer.logits(probe, calib_enc) - calib_ref) ** 2).mean())
        order = sorted(sensitivity, key=sensitivity.get, reverse=True)
        notes["sensitivity"] = {layer: sensitivity[layer] for layer in order}
        for layer in order[:max_fp32_layers]:
            notes["fp32_layers"].append(layer)
            current = quantizer.build(setting, exclude=list(notes["fp32_layers"]), only=None)
            acc = accuracy(current)
            notes["steps"].append({"fp32_layer": layer, "accuracy": acc})
            if acc >= target:
                break
        if acc < target:
            raise ValueError(
                f"fallback: with {len(notes['fp32_layers'])} layers unquantized the {what} model keeps "
                f"{acc / fp32_accuracy:.2%} of the unquantized accuracy on {len(labels)} {source} examples, "
                f"below {budget:.0%} (kept: {', '.join(notes['fp32_layers'])}); raise max_fp32_layers or choose "
                "another recipe"
            )
    notes["accuracy"] = acc
    notes["reason"] = (
        f"{what} everywhere kept the budget" if not notes["fp32_layers"]
        else "the most sensitive layers, left unquantized until the budget was kept"
    )  # fmt: skip
    ctx.notes["fallback"] = notes
    return current
