"""Formats and devices: the one place that answers, for a saved variant and a device, whether it
can run there (and if not, the one-line reason), how to load and place it as a deployment would,
how to time a call and read peak memory (`Device`). Steps, the bench worker and runner ask here
instead of testing for "cuda" themselves. A new format is one file with a `BACKEND` and a line
below; a new device kind is a case in device.py."""

from __future__ import annotations

from pathlib import Path

from slimbench import SlimbenchError
from slimbench.backends import aoti, eager, genai, ort, torchscript, triton_kernels
from slimbench.backends.base import Backend, Loaded
from slimbench.backends.device import CPU, Device
from slimbench.core.manifest import read_manifest

BACKENDS: dict[str, Backend] = {
    b.kind: b
    for b in (
        eager.BACKEND,
        torchscript.BACKEND,
        triton_kernels.BACKEND,
        ort.BACKEND,
        aoti.BACKEND,
        genai.BACKEND,
    )
}
LOADERS: dict[str, str] = {kind: b.loader for kind, b in BACKENDS.items()}


class NotRunnable(SlimbenchError):
    """A variant that cannot run on the device asked for; the message is the reason."""


def backend(kind: str) -> Backend:
    if kind not in BACKENDS:
        raise SlimbenchError(f"unknown variant kind {kind!r} (known: {', '.join(BACKENDS)})")
    return BACKENDS[kind]


def cannot_run(manifest: dict, device: Device | str) -> str | None:
    """None where the variant described by `manifest` can run on `device`, else the reason."""
    return backend(manifest["kind"]).unavailable(Device.parse(device), manifest)


def load(model_dir: Path, device: Device | str = CPU, num_threads: int | None = None) -> Loaded:
    """Load a saved variant with the standard loader of its format, placed on `device`."""
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from slimbench.tasks import get_task

    device = Device.parse(device)
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    reason = cannot_run(manifest, device)
    if reason:
        raise NotRunnable(f"{model_dir.name} cannot run on {device}: {reason}")
    task = get_task(manifest["task"])
    if num_threads:
        torch.set_num_threads(num_threads)
    device.activate()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    task.prepare_tokenizer(tokenizer)
    config = AutoConfig.from_pretrained(model_dir)
    loaded = backend(manifest["kind"]).load(model_dir, manifest, task, tokenizer, config, device, num_threads)
    loaded.path = model_dir
    return loaded


__all__ = ["BACKENDS", "CPU", "LOADERS", "Backend", "Device", "Loaded", "NotRunnable", "backend", "cannot_run",
           "load"]  # fmt: skip
