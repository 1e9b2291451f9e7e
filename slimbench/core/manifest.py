"""`slimbench.json`, the manifest beside every saved variant: read, written atomically, updated."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from slimbench import SlimbenchError

MANIFEST = "slimbench.json"
MANIFEST_VERSION = 1


def read_manifest(path: Path) -> dict[str, Any]:
    file = Path(path) / MANIFEST
    if not file.is_file():
        raise SlimbenchError(f"{str(path)!r} is not a slimbench variant (no {MANIFEST})")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise SlimbenchError(f"{str(file)!r} is not valid JSON ({e.msg}, line {e.lineno})") from None


def write_json_atomic(file: Path, data: dict) -> None:
    tmp = file.with_name(f".{file.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, file)


def update_metrics(path: Path, metrics: dict[str, Any]) -> None:
    manifest = read_manifest(path)
    manifest.setdefault("metrics", {}).update(metrics)
    write_json_atomic(Path(path) / MANIFEST, manifest)
