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


class Eager(Backend):
    kind = "torch"
    loader = "transformers.AutoModelFor*.from_pretrained"

    def unavailable(self, device: Device, manifest: dict | None = None) -> str | None:
        reason = device.unavailable()
        if reason:
            return reason
        method = (manifest or {}).get("notes", {}).get("quantization")
        package = QUANT_PACKAGES.get(method)
        if package and importlib.util.find_spec(package) is None:
            return f"{method} weights need the {package} package (pip install {package})"
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
        gen = greedy_generate(model, tokenizer) if task.generates else None
        return Loaded(manifest, config, tokenizer, torch_logits(model), "pt", placer(device), gen)


BACKEND = Eager()
