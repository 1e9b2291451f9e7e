"""AOTInductor packages (`model.pt2`, from the `compile` step): loaded with
`torch._inductor.aoti_load_package`, called by name with the tokenizer's outputs (`model(**enc)`: input_ids,
attention_mask and token_type_ids where the tokenizer makes them) -> logits, on the device they were compiled
for; on a GPU each input shape can be replayed as a CUDA graph."""

from __future__ import annotations

import shutil
from pathlib import Path

from slimbench import SlimbenchError
from slimbench.backends.base import Backend, Loaded, artifact_call, placer
from slimbench.backends.cudagraphs import note_capture
from slimbench.backends.device import Device

PACKAGE_FILE = "model.pt2"


def cuda_graph_replay(fn):
    """Capture `fn(batch)` (a dict of input tensors) once per input shape into a CUDA graph with static
    input buffers, then replay it: one launch per call instead of one per kernel. The output is the
    graph's own buffer, overwritten by the next call with the same shape.

    A package that cannot be captured raises a one-line SlimbenchError that names the remedy."""
    graphs = {}

    def call(batch):
        key = tuple((name, tuple(t.shape)) for name, t in batch.items())
        if key not in graphs:
            static = {name: t.clone() for name, t in batch.items()}
            try:
                graphs[key] = (*_capture(fn, static), static)
            except RuntimeError as e:
                reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise SlimbenchError(
                    f"the compiled package cannot be captured as a CUDA graph ({reason}); "
                    "`compile: {cuda_graphs: false}` compiles it to run without graphs"
                ) from None
            note_capture()
        graph, out, static = graphs[key]
        for name, t in batch.items():
            static[name].copy_(t)
        graph.replay()
        return out

    return call


def _capture(fn, static):
    """`fn(static)` warmed up on a side stream, then captured: (the graph, its output buffer)."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):  # warm-up outside the graph (allocations, autotuning)
            fn(static)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn(static)
    return graph, out


class AOTInductor(Backend):
    kind = "torch-aoti"
    loader = "torch._inductor.aoti_load_package"

    def unavailable(self, device: Device, manifest: dict | None = None) -> str | None:
        reason = device.unavailable()
        if reason:
            return reason
        compiled_for = (manifest or {}).get("notes", {}).get("compiled_for")
        if compiled_for and compiled_for != device.type:
            return f"an AOTInductor package compiled for {compiled_for} runs there only; compile again on {device.type}"
        return None

    def save(self, model, path: Path, example_inputs=None) -> None:
        shutil.copy2(model.path, path / PACKAGE_FILE)
        model.config.save_pretrained(path)

    def load(self, model_dir, manifest, task, tokenizer, config, device, num_threads=None) -> Loaded:
        import torch

        # The single-threaded runner runs each call on the caller's stream. The default one serves calls
        # from a pool of model instances, synchronized in ways a stream capture does not permit ("operation
        # not permitted when stream is capturing", pytorch/pytorch#148601): no CUDA graph around it.
        runner = torch._inductor.aoti_load_package(
            str(Path(model_dir) / PACKAGE_FILE),
            run_single_threaded=True,
            device_index=-1 if device.index is None else device.index,
        )
        call = artifact_call(runner, manifest)
        if device.is_cuda and manifest["notes"].get("cuda_graphs"):
            call = cuda_graph_replay(call)

        def forward(batch):
            with torch.inference_mode():
                return call(batch)

        return Loaded(manifest, config, tokenizer, forward, "pt", placer(device))


BACKEND = AOTInductor()
