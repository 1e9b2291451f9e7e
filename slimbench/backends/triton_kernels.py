"""transformers models with slimbench's fused Triton kernels swapped in: saved with save_pretrained
(weight-only layers written back dequantized), loaded with from_pretrained, then
`slimbench.kernels.apply_kernels` applied again with the options the manifest records.

Run eagerly, a patched model pays one Python launch per kernel, which at small batches costs more
than the kernels save. Unless the kernels step said `cuda_graphs: false`, its logits run under
torch.compile's `cudagraphs` backend: traced whole once per input shape (the kernels are custom
ops, so nothing breaks the graph, and transformers skips its host-synchronizing mask checks while
tracing), then replayed as one CUDA graph per call. No Inductor code generation: the kernels and
PyTorch's own ops run as they are. A model that cannot be captured is refused in one line, never
measured without graphs under this variant's name."""

from __future__ import annotations

from pathlib import Path

from slimbench import SlimbenchError
from slimbench.backends.base import Backend, Loaded, greedy_generate, placer, torch_logits
from slimbench.backends.cudagraphs import skip_reason
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


def graph_replayed(model, require_graphs: bool = True):
    """`model` traced whole by torch.compile and replayed as CUDA graphs (one per input shape).

    Where the cudagraphs backend cannot capture a graph it runs the model without one and only logs
    why; then the variant would be measured as something it is not. So the calls that trace, warm up
    and capture a shape (the first two at each) run with Inductor's `cudagraph_or_error`, and such a
    model raises a one-line SlimbenchError instead (`require_graphs=False` lets it run uncaptured)."""
    import torch
    from torch._inductor import config

    compiled = torch.compile(model, backend="cudagraphs", fullgraph=True, dynamic=False)
    calls: dict[tuple, int] = {}

    def call(**batch):
        shape = tuple((name, tuple(value.shape)) for name, value in batch.items())
        seen = calls.get(shape, 0)
        if not require_graphs or seen >= 2:
            return compiled(**batch)
        calls[shape] = seen + 1
        try:
            with config.patch({"triton.cudagraph_or_error": True}):
                return compiled(**batch)
        except Exception as e:
            reason = skip_reason(str(e))
            if reason is None:
                raise
            raise SlimbenchError(
                f"the patched model cannot be captured as a CUDA graph ({reason}); "
                "`kernels: {cuda_graphs: false}` measures it without graphs"
            ) from None

    return call


BACKEND = TritonKernels()
