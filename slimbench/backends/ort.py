"""ONNX graphs run by ONNX Runtime through optimum's ORTModel classes: the CPU execution provider,
or the CUDA one where onnxruntime-gpu is installed."""

from __future__ import annotations

from pathlib import Path

from slimbench.backends.base import Backend, Loaded, greedy_generate, placer
from slimbench.backends.device import Device


def provider(device: Device) -> str:
    return "CUDAExecutionProvider" if device.is_cuda else "CPUExecutionProvider"


class OnnxRuntime(Backend):
    kind = "onnx"
    loader = "optimum.onnxruntime.ORTModelFor*.from_pretrained"

    def unavailable(self, device: Device, manifest: dict | None = None) -> str | None:
        reason = device.unavailable()
        if reason or not device.is_cuda:
            return reason
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
        import onnxruntime as ort

        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        kwargs = {"provider": provider(device), "session_options": options}
        if device.is_cuda:
            kwargs["provider_options"] = {"device_id": device.index or 0}
        model = task.ort_class().from_pretrained(model_dir, **kwargs)
        gen = greedy_generate(model, tokenizer) if task.generates else None
        forward = lambda b: model(**b).logits  # noqa: E731
        if device.is_cuda:
            return Loaded(manifest, config, tokenizer, forward, "pt", placer(device), gen)
        if task.generates:  # optimum's generate() takes torch tensors, its forward() numpy too
            return Loaded(manifest, config, tokenizer, forward, "pt", lambda b: b, gen)
        return Loaded(manifest, config, tokenizer, forward, "np", lambda b: b)


BACKEND = OnnxRuntime()
