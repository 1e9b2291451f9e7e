"""ONNX graphs run by ONNX Runtime through optimum's ORTModel classes: the CPU execution provider,
or the CUDA one where onnxruntime-gpu is installed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from slimbench.backends.base import Backend, Loaded, greedy_generate, placer, scores
from slimbench.backends.device import Device


def provider(device: Device) -> str:
    return "CUDAExecutionProvider" if device.is_cuda else "CPUExecutionProvider"


def full_logits(model, batch: dict):
    """Logits at every position. A causal-LM graph whose prefill keeps only the last positions (an
    overridable `logits_to_keep` initializer, see slimbench.optimize.export.keep_last_logits) is run once
    with `logits_to_keep = 0` and an empty cache; any other graph through its ORTModel."""
    import numpy as np

    session = getattr(model, "session", None)
    if session is None or "logits_to_keep" not in {i.name for i in session.get_overridable_initializers()}:
        return scores(model(**batch))
    as_torch = hasattr(batch["input_ids"], "numpy")
    ids = np.asarray(batch["input_ids"].cpu() if as_torch else batch["input_ids"])
    mask = np.asarray(batch["attention_mask"].cpu() if as_torch else batch["attention_mask"])
    feed = {"logits_to_keep": np.array(0, dtype=np.int64)}
    for i in session.get_inputs():
        if i.name == "input_ids":
            feed[i.name] = ids
        elif i.name == "attention_mask":
            feed[i.name] = mask
        elif i.name == "position_ids":  # as optimum makes them: 0.. over real tokens, 1 at padding
            feed[i.name] = np.where(mask == 0, 1, mask.cumsum(-1) - 1).astype(np.int64)
        elif i.name.startswith("past_key_values"):  # [batch, heads, 0, head_dim]: an empty cache
            dtype = np.float16 if i.type == "tensor(float16)" else np.float32
            feed[i.name] = np.zeros((len(ids), i.shape[1], 0, i.shape[3]), dtype=dtype)
    out = session.run(["logits"], feed)[0]
    if as_torch:
        import torch

        return torch.from_numpy(out).to(batch["input_ids"].device)
    return out


def session_options(num_threads: int | None = None):
    """ONNX Runtime session options: warnings off (a `logits_to_keep` graph input that is also an
    initializer is intended, and ORT warns of it at every load), `num_threads` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if num_threads:
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
    return options


class OnnxRuntime(Backend):
    kind = "onnx"
    loader = "optimum.onnxruntime.ORTModelFor*.from_pretrained"

    def unavailable(self, device: Device, manifest: dict | None = None) -> str | None:
        reason = device.unavailable()
        if reason:
            return reason
        if importlib.util.find_spec("onnxruntime") is None:
            return "ONNX variants need ONNX Runtime (pip install onnxruntime, or onnxruntime-gpu for CUDA)"
        if not device.is_cuda:
            return None
        import onnxruntime

        if provider(device) not in onnxruntime.get_available_providers():
            return (
                "ONNX Runtime here has no CUDAExecutionProvider: install onnxruntime-gpu "
                "(pip install 'slimbench[gpu]') in place of onnxruntime"
            )
        return None

    def save(self, model, path: Path, example_inputs=None) -> None:
        model.save_pretrained(path)

    def load(self, model_dir, manifest, task, tokenizer, config, device, num_threads=None) -> Loaded:
        kwargs = {"provider": provider(device), "session_options": session_options(num_threads)}
        if device.is_cuda:
            kwargs["provider_options"] = {"device_id": device.index or 0}
        model = task.ort_class().from_pretrained(model_dir, **kwargs)
        gen = greedy_generate(model, tokenizer) if task.generates else None
        forward = lambda b: full_logits(model, b)  # noqa: E731
        if device.is_cuda:
            return Loaded(manifest, config, tokenizer, forward, "pt", placer(device), gen)
        if task.generates:  # optimum's generate() takes torch tensors, its forward() numpy too
            return Loaded(manifest, config, tokenizer, forward, "pt", lambda b: b, gen)
        return Loaded(manifest, config, tokenizer, forward, "np", lambda b: b)


BACKEND = OnnxRuntime()
