"""Results in: any number of slimbench results JSONL files and pytest-benchmark JSON files (whose
`extra_info` holds slimbench's record), merged into one tidy DataFrame, one row per variant x
workload x hardware configuration; the newest measurement of a cell is kept."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from slimbench import SlimbenchError

CELL = ["task", "variant", "device", "device_name", "num_threads", "batch_size", "seq_len"]


def _records(path: Path, torn: dict[str, list[int]]) -> list[dict]:
    from slimbench.bench.runner import SCHEMA_VERSION, read_results

    if not path.is_file():
        raise SlimbenchError(f"results file {str(path)!r} does not exist")
    if path.suffix == ".json":  # pytest-benchmark's --benchmark-json
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise SlimbenchError(f"{str(path)!r} is not valid JSON ({e.msg}, line {e.lineno})") from None
        if not isinstance(data, dict) or "benchmarks" not in data:
            raise SlimbenchError(f"{str(path)!r} is neither a results JSONL file nor pytest-benchmark JSON")
        rows = [b.get("extra_info", {}) for b in data["benchmarks"]]
        rows = [r for r in rows if "variant" in r and "batch_size" in r]
    else:
        torn[str(path)] = []
        rows = read_results(path, torn[str(path)])
    for r in rows:
        version = r.get("schema_version", 1)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise SlimbenchError(
                f"{str(path)!r} holds records of schema_version {version}; this slimbench reads up to "
                f"{SCHEMA_VERSION}: upgrade slimbench"
            )
        missing = [c for c in CELL if c not in r]
        if missing:
            raise SlimbenchError(
                f"{str(path)!r}: a record lacks {', '.join(missing)}; not a slimbench results file"
            )
    return rows


def load_results(paths: list[Path]) -> pd.DataFrame:
    """All records of the given files; for a cell measured more than once the newest wins, and
    `df.attrs["dropped"]` counts the older ones; `df.attrs["torn"]` holds, per file, the numbers of
    the lines that are not whole records (cut short by a killed run)."""
    from slimbench.bench.runner import RECORD_FIELDS

    torn: dict[str, list[int]] = {}
    rows = [r for path in paths for r in _records(Path(path), torn)]
    if not rows:
        raise SlimbenchError("no results to report: the results files hold no records")
    df = pd.DataFrame(rows)
    df = df.reindex(columns=[*RECORD_FIELDS, *(c for c in df.columns if c not in RECORD_FIELDS)])
    df["status"] = df["status"].fillna("ok")  # schema 1: every record was a measurement
    df["timestamp"] = df["timestamp"].fillna("")
    before = len(df)
    df = df.sort_values("timestamp", kind="stable").drop_duplicates(CELL, keep="last").reset_index(drop=True)
    df.attrs["dropped"] = before - len(df)
    df.attrs["torn"] = {path: lines for path, lines in torn.items() if lines}
    return df


def config_label(device: str, device_name: str, threads) -> str:
    """A hardware configuration as people name it."""
    if str(device).startswith("cuda"):
        return f"{device_name} ({device})"
    threads = int(threads) if pd.notna(threads) else "?"
    return f"{device_name}, {threads} thread{'s' if threads != 1 else ''}"
