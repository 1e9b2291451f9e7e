"""transformers models with slimbench's fused Triton kernels swapped in: saved with save_pretrained
(weight-only layers written back dequantized), loaded with from_pretrained, then
`slimbench.kernels.apply_kernels` applied again with the options the manifest records.

Run eagerly, a patched model pays one Python launch per kernel, which at small batches costs more
than the kernels save. Unless the kernels step said `cuda_graphs: false`, its logits run under
torch.compile's `cudagraphs` backend: traced whole once per input shape (the kernels are custom
ops, so nothing breaks the graph, and transformers skips its host-synchronizing mask checks while
tracing), then replayed as one CUDA graph per call. No Inductor code generation: the kernels and
PyTorch's own ops run as they are."""

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
        need = (manifest or {}).get("notes", {}).get("min_compute_capability")
        if device.lacks_capability(need):
            return f"Triton kernels need a CUDA GPU of compute capability {need[0]}.{need[1]} or newer"
        return device.unavailable()

    def save(self, model, path: Path, example_inputs=None) -> None:
        from slimbench.kernels.quant_matmul import dequantized_state_dict

        model.save_pretrained(path, state_dict=dequantized_state_dict(model), safe_serialization=True)

    def load(self, model_dir, manifest, task, tokenizer, config, device, num_threads=None) -> Loaded:
        from slimbench.kernels.patch import apply_kernels

        model = task.auto_class().from_pretrained(model_dir, device_map=str(device), dtype="auto").eval()
        apply_kernels(model, **manifest["notes"]["kernels"])
        gen = greedy_generate(model, tokenizer) if task.generates else None  # decode shapes change every step
        replayed = graph_replayed(model) if device.is_cuda and manifest["notes"].get("cuda_graphs") else model
        return Loaded(manifest, config, tokenizer, torch_logits(replayed), "pt", placer(device), gen)


def graph_replayed(model):
    """`model` traced whole by torch.compile and replayed as CUDA graphs (one per input shape)."""
    import torch

    return torch.compile(model, backend="cudagraphs", fullgraph=True, dynamic=False)


BACKEND = TritonKernels()
