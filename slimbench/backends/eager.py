"""transformers models in eager PyTorch, as `from_pretrained` loads them: fp32, half precision
(the dtype in config.json), and weights quantized by bitsandbytes or torchao through the config's
`quantization_config`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from slimbench.backends.base import Backend, Loaded, greedy_generate, placer, torch_logits
from slimbench.backends.device import Device

# quantization_config.quant_method -> the package that must be importable to load it
QUANT_PACKAGES = {"bitsandbytes": "bitsandbytes", "torchao": "torchao"}


def quant_method(config) -> str | None:
    quant = getattr(config, "quantization_config", None)
    method = quant.get("quant_method") if isinstance(quant, dict) else getattr(quant, "quant_method", None)
    return None if method is None else str(getattr(method, "value", method))


def to_semi_structured(model, layers: list[str]) -> None:
    """Swap the 2:4 weights of `layers` for torch's sparse semi-structured tensors (cuSPARSELt on the GPU),
    as a deployment does after from_pretrained."""
    import torch
    from torch.sparse import to_sparse_semi_structured

    for name in layers:
        module = model.get_submodule(name)
        module.weight = torch.nn.Parameter(to_sparse_semi_structured(module.weight), requires_grad=False)


class Eager(Backend):
    kind = "torch"
    loader = "transformers.AutoModelFor*.from_pretrained"

    def unavailable(self, device: Device, manifest: dict | None = None) -> str | None:
        reason = device.unavailable()
        if reason:
            return reason
        notes = (manifest or {}).get("notes", {})
        method = notes.get("quantization")
        package = QUANT_PACKAGES.get(method)
        if package and importlib.util.find_spec(package) is None:
            return f"{method} weights need the {package} package (pip install {package})"
        need = notes.get("min_compute_capability")  # fp8 weights, 2:4 sparse kernels
        if device.lacks_capability(need):
            what = "2:4 sparse kernels" if notes.get("semi_structured") else f"{notes.get('dtype')} weights"
            return f"{what} need a CUDA GPU of compute capability {need[0]}.{need[1]} or newer"
        return None

    def save(self, model, path: Path, example_inputs=None) -> None:
        # torchao tensor subclasses are saved with torch's serializer; everything else as safetensors
        model.save_pretrained(
            path, safe_serialization=quant_method(getattr(model, "config", None)) != "torchao"
        )

    def load(self, model_dir, manifest, task, tokenizer, config, device, num_threads=None) -> Loaded:
        # device_map, not .to(): quantized (bitsandbytes) models are placed while loading;
        # dtype "auto": a half-precision variant computes in the dtype it was saved in
        model = task.auto_class().from_pretrained(model_dir, device_map=str(device), dtype="auto").eval()
        if manifest.get("notes", {}).get("semi_structured"):
            to_semi_structured(model, manifest["notes"]["semi_structured_layers"])
        gen = greedy_generate(model, tokenizer) if task.generates else None
        return Loaded(manifest, config, tokenizer, torch_logits(model), "pt", placer(device), gen)


BACKEND = Eager()
