"""The regression gate: compare two results files cell by cell (variant x workload x device) and
fail where a figure got worse beyond its threshold, as pytest-benchmark's --benchmark-compare-fail
does for functions.

    slimbench compare OLD.jsonl NEW.jsonl --fail-on latency_ms_p50:5%,metric:-0.5%

Each field has a known worse direction (latency, memory and size up; throughput down; the metric
down, or up for a lower-is-better metric such as perplexity); a threshold's sign is not needed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from slimbench import SlimbenchError

# field -> +1 where a larger value is worse, -1 where a smaller one is ("metric" is decided per task)
DIRECTIONS = {
    "latency_ms_p50": 1, "latency_ms_p90": 1, "latency_ms_p99": 1, "latency_ms_mean": 1,
    "throughput_items_per_s": -1, "peak_rss_bytes": 1, "gpu_peak_allocated_bytes": 1,
    "gpu_peak_reserved_bytes": 1, "size_on_disk_bytes": 1, "metric": -1,
}  # fmt: skip
_RULE = re.compile(r"^([a-z0-9_]+):([+-]?\d+(?:\.\d+)?)%$")


@dataclass(frozen=True)
class Rule:
    field: str
    percent: float  # the change in the worse direction that fails, in percent


def parse_rules(text: str) -> list[Rule]:
    rules = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = _RULE.match(part)
        if not m:
            raise SlimbenchError(
                f"--fail-on: write each rule as FIELD:PERCENT% (e.g. latency_ms_p50:5%), got {part!r}"
            )
        if m.group(1) not in DIRECTIONS:
            raise SlimbenchError(f"--fail-on: unknown field {m.group(1)!r} (known: {', '.join(DIRECTIONS)})")
        rules.append(Rule(m.group(1), abs(float(m.group(2)))))
    if not rules:
        raise SlimbenchError("--fail-on: give at least one rule, e.g. latency_ms_p50:5%")
    return rules


def _cells(path: Path) -> dict[tuple, dict]:
    from slimbench.bench.runner import read_results, record_key

    if not Path(path).is_file():
        raise SlimbenchError(f"results file {str(path)!r} does not exist")
    cells = {}
    for r in read_results(path):
        if r.get("status", "ok") == "ok":
            cells[record_key(r)] = r  # the newest measurement of a cell wins
    if not cells:
        raise SlimbenchError(f"results file {str(path)!r} holds no measured records")
    return cells


def compare(old_path: Path, new_path: Path, rules: list[Rule]) -> tuple[list[dict], list[str]]:
    """(one row per cell and rule, with old, new, change and verdict; cells found in one file only)."""
    from slimbench.tasks import get_task

    old, new = _cells(old_path), _cells(new_path)
    rows = []
    for key in sorted(old.keys() & new.keys(), key=str):
        task, variant, device, _, batch, seq = key
        for rule in rules:
            a, b = old[key].get(rule.field), new[key].get(rule.field)
            if a is None or b is None:
                continue
            worse = DIRECTIONS[rule.field]
            if rule.field == "metric" and get_task(task or "text-classification").lower_is_better:
                worse = 1
            change = (b - a) / a * 100 if a else 0.0
            rows.append({
                "variant": variant, "device": device, "batch_size": batch, "seq_len": seq, "field": rule.field,
                "old": a, "new": b, "change_percent": change, "regression": change * worse > rule.percent,
                "threshold_percent": rule.percent,
            })  # fmt: skip
    alone = [
        f"only in {old_path}: {k[1]} {k[2]} b{k[4]} s{k[5]}" for k in sorted(old.keys() - new.keys(), key=str)
    ]
    alone += [
        f"only in {new_path}: {k[1]} {k[2]} b{k[4]} s{k[5]}" for k in sorted(new.keys() - old.keys(), key=str)
    ]
    return rows, alone


def format_rows(rows: list[dict]) -> str:
    import pandas as pd

    if not rows:
        return "No cell was measured in both files."
    df = pd.DataFrame(rows)
    df["old"] = df["old"].map("{:.4g}".format)
    df["new"] = df["new"].map("{:.4g}".format)
    df["change"] = df["change_percent"].map("{:+.1f}%".format)
    df["verdict"] = [
        f"REGRESSION (> {t:g}%)" if r else "ok"
        for r, t in zip(df["regression"], df["threshold_percent"], strict=True)
    ]
    cols = ["variant", "device", "batch_size", "seq_len", "field", "old", "new", "change", "verdict"]
    return df[cols].to_markdown(index=False)
