"""transformers models with slimbench's fused Triton kernels swapped in: saved with save_pretrained
(weight-only layers written back dequantized), loaded with from_pretrained, then
`slimbench.kernels.apply_kernels` applied again with the options the manifest records."""

from __future__ import annotations

from pathlib import Path

from slimbench.backends.base import Backend, Loaded, greedy_generate, placer, torch_logits
from slimbench.backends.device import Device


class TritonKernels(Backend):
    kind = "torch-kernels"
    loader = "transformers.AutoModelFor*.from_pretrained + slimbench.kernels.apply_kernels"

    def unavailable(self, device: Device, manifest: dict | None = None) -> str | None:
        if not device.is_cuda:
            return "Triton kernels are measured on a CUDA GPU only (--device cuda)"
        return device.unavailable()

    def save(self, model, path: Path, example_inputs=None) -> None:
        from slimbench.kernels.quant_matmul import dequantized_state_dict

        model.save_pretrained(path, state_dict=dequantized_state_dict(model), safe_serialization=True)

    def load(self, model_dir, manifest, task, tokenizer, config, device, num_threads=None) -> Loaded:
        from slimbench.kernels.patch import apply_kernels

        model = task.auto_class().from_pretrained(model_dir, device_map=str(device), dtype="auto").eval()
        apply_kernels(model, **manifest["notes"]["kernels"])
        gen = greedy_generate(model, tokenizer) if task.generates else None
        return Loaded(manifest, config, tokenizer, torch_logits(model), "pt", placer(device), gen)


BACKEND = TritonKernels()
