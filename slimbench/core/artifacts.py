"""Artifacts: a variant saved as a directory that loads with the standard loader of its format,
plus `slimbench.json` (recipe, source hash, environment, metrics). Written to a temporary
directory and renamed into place, so an interrupted run never leaves a half-written model."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slimbench import SlimbenchError
from slimbench.backends import backend
from slimbench.core.environment import environment
from slimbench.core.manifest import MANIFEST, MANIFEST_VERSION, read_manifest, write_json_atomic
from slimbench.core.model_files import sha256_files
from slimbench.tasks import get_task

__all__ = ["MANIFEST", "model_size_bytes", "read_manifest", "replace_dir", "save_variant", "verify"]


def model_size_bytes(path: Path) -> int:
    """Bytes of the files that hold weights (what a deployment ships), not tokenizer or configs."""
    suffixes = {".safetensors", ".bin", ".onnx", ".onnx_data", ".pt", ".pt2", ".data"}
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file() and f.suffix in suffixes)


def file_hashes(path: Path) -> dict[str, str]:
    """sha256 of every file under `path` (relative names), the manifest itself excepted."""
    out = {}
    for f in sorted(Path(path).rglob("*")):
        if f.is_file() and f.name != MANIFEST:
            out[f.relative_to(path).as_posix()] = sha256_files([f], with_names=False)
    return out


def verify(path: Path) -> list[str]:
    """What differs between a variant directory and the file list its manifest holds: one line per
    changed, missing or unlisted file; empty when the artifact is as slimbench wrote it."""
    recorded = read_manifest(path).get("files")
    if recorded is None:
        raise SlimbenchError(f"{str(path)!r}: its {MANIFEST} lists no files (written by an older slimbench)")
    found = file_hashes(path)
    problems = [f"changed: {name}" for name in recorded if name in found and found[name] != recorded[name]]
    problems += [f"missing: {name}" for name in recorded if name not in found]
    problems += [f"not written by slimbench: {name}" for name in found if name not in recorded]
    return problems


def foreign_files(path: Path) -> list[str]:
    """Files under `path` that slimbench did not write: everything, unless `path` is a variant whose
    manifest lists its files (a variant from before file lists counts as slimbench's whole)."""
    path = Path(path)
    try:
        manifest = read_manifest(path)
    except SlimbenchError:
        return sorted(f.relative_to(path).as_posix() for f in path.rglob("*") if f.is_file()) or [
            "(directory)"
        ]
    if "files" not in manifest:
        return []
    return [name for name in file_hashes(path) if name not in manifest["files"]]


def check_replaceable(final: Path, overwrite: bool = False) -> list[str]:
    """The files under `final` that slimbench did not write (none where it does not exist); a
    one-line error where there are any, unless `overwrite`."""
    final = Path(final)
    if not final.exists():
        return []
    if not final.is_dir():
        raise SlimbenchError(f"{str(final)!r} exists and is not a directory; choose another output path")
    foreign = foreign_files(final)
    if foreign and not overwrite:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise SlimbenchError(
            f"{str(final)!r} holds files slimbench did not write ({shown}); choose another --out, or pass "
            "--overwrite to move that directory aside (nothing is deleted)"
        )
    return foreign


def replace_dir(new: Path, final: Path, overwrite: bool = False, log=print) -> None:
    """Move the complete directory `new` to `final`. An older `final` that slimbench wrote is removed
    only after; one holding anything else stops with a one-line error, or with `overwrite` is moved
    aside to `<final>.replaced-<time>`: slimbench never deletes files it did not write."""
    final = Path(final)
    foreign = check_replaceable(final, overwrite)
    if not final.exists():
        os.replace(new, final)
        return
    if foreign:
        aside = final.with_name(f"{final.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(final, aside)
        os.replace(new, final)
        log(f"moved {final} (it held files slimbench did not write) to {aside}")
        return
    old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
    os.replace(final, old / final.name)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)


def save_variant(
    model,
    kind: str,
    out_dir: Path,
    name: str,
    *,
    tokenizer,
    manifest: dict[str, Any],
    example_inputs=None,
    check: Callable[[Path], dict] | None = None,
    overwrite: bool = False,
) -> Path:
    """Save `model` as `<out_dir>/<name>/`; replaces an older variant of that name only once
    the new one is complete and `check(staged_dir)` (which may raise to refuse it) has run; its
    result is recorded in the manifest as `agreement_check`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=out_dir))
    try:
        saver = backend(kind)
        saver.save(model, tmp, example_inputs)
        tokenizer.save_pretrained(tmp)
        if "task" in manifest and "source" in manifest:
            get_task(manifest["task"]).save_files(Path(manifest["source"]["path"]), tmp)
        full = {
            "format_version": MANIFEST_VERSION,
            "variant": name,
            "kind": kind,
            "loader": saver.loader,
            **manifest,
            "size_on_disk_bytes": model_size_bytes(tmp),
            "environment": environment(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "metrics": {},
            "files": file_hashes(tmp),
        }
        write_json_atomic(tmp / MANIFEST, full)
        if check is not None:
            full["agreement_check"] = check(tmp)
            write_json_atomic(tmp / MANIFEST, full)
        replace_dir(tmp, final, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
