"""Artifacts: a variant saved as a directory that loads with the standard loader of its format,
plus `slimbench.json` (recipe, source hash, environment, metrics). Written to a temporary
directory and renamed into place, so an interrupted run never leaves a half-written model."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from slimbench import SlimbenchError
from slimbench.environment import environment
from slimbench.registry import LOADERS

MANIFEST = "slimbench.json"
MANIFEST_VERSION = 1
TORCHSCRIPT_FILE = "model.pt"


def model_size_bytes(path: Path) -> int:
    """Bytes of the files that hold weights (what a deployment ships), not tokenizer or configs."""
    suffixes = {".safetensors", ".bin", ".onnx", ".onnx_data", ".pt", ".data"}
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file() and f.suffix in suffixes)


def read_manifest(path: Path) -> dict[str, Any]:
    file = Path(path) / MANIFEST
    if not file.is_file():
        raise SlimbenchError(f"{str(path)!r} is not a slimbench variant (no {MANIFEST})")
    return json.loads(file.read_text())


def _write_json_atomic(file: Path, data: dict) -> None:
    tmp = file.with_name(f".{file.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, file)


def update_metrics(path: Path, metrics: dict[str, Any]) -> None:
    manifest = read_manifest(path)
    manifest.setdefault("metrics", {}).update(metrics)
    _write_json_atomic(Path(path) / MANIFEST, manifest)


def replace_dir(new: Path, final: Path) -> None:
    """Move the complete directory `new` to `final`; an older `final` is removed only after."""
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.replace(final, old / final.name)
        os.replace(new, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, final)


def save_variant(
    model,
    kind: str,
    out_dir: Path,
    name: str,
    *,
    tokenizer,
    manifest: dict[str, Any],
    example_inputs=None,
) -> Path:
    """Save `model` as `<out_dir>/<name>/`; replaces an older variant of that name only once
    the new one is complete."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=out_dir))
    try:
        if kind == "torch":
            quant = getattr(getattr(model, "config", None), "quantization_config", None)
            method = (
                quant.get("quant_method") if isinstance(quant, dict) else getattr(quant, "quant_method", None)
            )
            # torchao tensor subclasses are saved with torch's serializer; everything else as safetensors
            model.save_pretrained(
                tmp, safe_serialization=str(method) not in ("torchao", "QuantizationMethod.TORCHAO")
            )
        elif kind == "torch-kernels":
            from slimbench.kernels.quant_matmul import dequantized_state_dict

            model.save_pretrained(tmp, state_dict=dequantized_state_dict(model), safe_serialization=True)
        elif kind == "torch-int8":
            from slimbench.optimize.quantize import to_torchscript

            to_torchscript(model, example_inputs).save(str(tmp / TORCHSCRIPT_FILE))
            model.config.save_pretrained(tmp)
        elif kind == "onnx":
            model.save_pretrained(tmp)
        else:
            raise ValueError(f"unknown model kind {kind!r}")
        tokenizer.save_pretrained(tmp)
        full = {
            "format_version": MANIFEST_VERSION,
            "variant": name,
            "kind": kind,
            "loader": LOADERS[kind],
            **manifest,
            "size_on_disk_bytes": model_size_bytes(tmp),
            "environment": environment(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "metrics": {},
        }
        _write_json_atomic(tmp / MANIFEST, full)
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
