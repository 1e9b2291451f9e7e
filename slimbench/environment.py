"""The environment fingerprint every result and manifest carries: library versions, CPU, GPU, git revision."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path

_LIBRARIES = (
    "torch",
    "transformers",
    "optimum",
    "optimum-onnx",
    "onnxruntime",
    "bitsandbytes",
    "triton",
    "torchao",
)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu_driver() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return str(pynvml.nvmlSystemGetDriverVersion())
        finally:
            pynvml.nvmlShutdown()
    except Exception:
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
    env = {"python": platform.python_version()}
    env.update({name.replace("-", "_"): _version(name) for name in _LIBRARIES})
    try:
        import torch

        env["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
    except ImportError:
        env["cuda"] = None
    env["cpu_model"] = cpu_model()
    env["gpu_driver"] = _gpu_driver() if env["cuda"] else None
    env["git_rev"] = git_rev()
    env["platform"] = platform.platform()
    return env
