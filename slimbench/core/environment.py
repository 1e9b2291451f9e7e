"""The environment fingerprint every result and manifest carries: library versions, CPU, GPU, git revision."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from slimbench.backends.device import cpu_model, gpu_facts

_LIBRARIES = (  # torch is read from the module: see environment()
    "transformers",
    "optimum",
    "optimum-onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "bitsandbytes",
    "triton",
    "torchao",
)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def git_rev() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@functools.cache
def environment() -> dict:
    import torch

    # torch.__version__ names the build (+cpu, +cu130), which PyPI's CUDA wheels leave out of their metadata
    env = {"python": platform.python_version(), "torch": torch.__version__}
    env.update({name.replace("-", "_"): _version(name) for name in _LIBRARIES})
    env.update(gpu_facts())
    env["cpu_model"] = cpu_model()
    env["git_rev"] = git_rev()
    env["platform"] = platform.platform()
    return env
