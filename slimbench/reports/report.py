"""Comparison tables: per device, variant x workload, with speedup over `baseline` on the same
device and workload and the within-budget flag: 99% of the baseline metric (MLPerf's rule), or
at most 1% more perplexity."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from slimbench import SlimbenchError
from slimbench.tasks import get_task
from slimbench.tasks.causal_lm import EVAL_BLOCKS, NEW_TOKENS

MIB = 1024 * 1024


def load_results(paths: list[Path]) -> pd.DataFrame:
    """All records of the given JSONL files; for a repeated measurement the newest wins."""
    rows = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise SlimbenchError(f"results file {str(path)!r} does not exist")
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    if not rows:
        raise SlimbenchError("no results to report: the results files hold no records")
    from slimbench.bench.runner import RECORD_FIELDS

    df = pd.DataFrame(rows)
    df = df.reindex(columns=[*RECORD_FIELDS, *(c for c in df.columns if c not in RECORD_FIELDS)])
    df = df.sort_values("timestamp").drop_duplicates(
        ["task", "variant", "device", "device_name", "num_threads", "batch_size", "seq_len"], keep="last"
    )
    return df.reset_index(drop=True)


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (hardware, variant, workload) with speedup and budget columns added."""
    hw = ["task", "device", "device_name", "num_threads"]
    df = df.assign(status=df["status"].fillna("ok") if "status" in df else "ok")  # schema 1 has no status
    base = df[(df["recipe"] == "baseline") & (df["status"] == "ok")][
        [*hw, "batch_size", "seq_len", "latency_ms_p50"]
    ]
    base = base.rename(columns={"latency_ms_p50": "_base_p50"})
    out = df.merge(base, on=[*hw, "batch_size", "seq_len"], how="left")
    out["speedup_vs_baseline"] = out["_base_p50"] / out["latency_ms_p50"]
    out["within_budget"] = pd.array(
        [get_task(task).within_budget(None if pd.isna(r) else float(r))
         for task, r in zip(out["task"], out["metric_ratio_to_baseline"], strict=True)],
        dtype="boolean",
    )  # NA where there is no baseline  # fmt: skip
    return out.drop(columns=["_base_p50"]).sort_values([*hw, "batch_size", "seq_len", "latency_ms_p50"])


def _fmt_table(t: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "variant": t["variant"],
            "batch": t["batch_size"],
            "seq": t["seq_len"],
            "p50 ms": t["latency_ms_p50"].map("{:.1f}".format),
            "p99 ms": t["latency_ms_p99"].map("{:.1f}".format),
            get_task(t["task"].iloc[0]).throughput_unit: t["throughput_items_per_s"].map("{:.1f}".format),
            "speedup": t["speedup_vs_baseline"].map(lambda x: "" if pd.isna(x) else f"{x:.2f}x"),
            "peak RSS MiB": (t["peak_rss_bytes"] / MIB).map("{:.0f}".format),
            "GPU peak MiB": t["gpu_peak_allocated_bytes"].map(
                lambda x: "" if pd.isna(x) else f"{x / MIB:.0f}"
            ),
            "size MiB": (t["size_on_disk_bytes"] / MIB).map("{:.1f}".format),
            t["metric_name"].iloc[0]: t["metric"].map("{:.4f}".format),
            "vs baseline": t["metric_ratio_to_baseline"].map(lambda x: "" if pd.isna(x) else f"{x:.2%}"),
            "agreement": t["agreement_with_baseline"].map(lambda x: "" if pd.isna(x) else f"{x:.2%}"),
            "within budget": t["within_budget"].map(lambda x: "" if pd.isna(x) else ("yes" if x else "no")),
            "reps": t["reps"],
            "CV": [_cv(cv, unstable) for cv, unstable in zip(t.get("latency_cv", [None] * len(t)),
                                                              t.get("unstable", [None] * len(t)), strict=True)],
        }
    )  # fmt: skip


def _cv(cv, unstable) -> str:
    """Coefficient of variation of the latency, flagged where the record is unstable."""
    if cv is None or pd.isna(cv):
        return ""
    return f"{cv:.0%}" + (" unstable" if unstable is True else "")


def _not_run_lines(t: pd.DataFrame) -> list[str]:
    lines = []
    for (variant, reason), w in t.groupby(["variant", "reason"], sort=False):
        shapes = ", ".join(f"b{b} s{s}" for b, s in zip(w["batch_size"], w["seq_len"], strict=True))
        lines.append(f"- **{variant}** not run ({shapes}): {reason}")
    return lines


def _best_lines(t: pd.DataFrame) -> list[str]:
    lines = []
    for (bs, seq), w in t.groupby(["batch_size", "seq_len"]):
        ok = w[w["within_budget"].fillna(False).astype(bool)]
        if ok.empty:
            continue
        best = ok.sort_values("latency_ms_p50").iloc[0]
        speed = (
            "" if pd.isna(best["speedup_vs_baseline"]) else f", {best['speedup_vs_baseline']:.2f}x baseline"
        )
        lines.append(
            f"- batch {bs}, seq {seq}: fastest within budget is **{best['variant']}** "
            f"({best['latency_ms_p50']:.1f} ms p50{speed}, {best['metric_name']} {best['metric']:.4f})"
        )
    return lines


REPORT_HEADER = "# slimbench report"
OUTPUTS = ("report.md", "report.csv")


def _claim_outputs(out_dir: Path, overwrite: bool) -> None:
    """slimbench rewrites report files it wrote (report.md starts with its header); others stop the
    run with a one-line error, or with `overwrite` are moved aside, never deleted."""
    md = out_dir / "report.md"
    ours = md.is_file() and md.read_text(errors="ignore").startswith(REPORT_HEADER)
    theirs = [out_dir / name for name in OUTPUTS if (out_dir / name).exists() and not ours]
    if theirs and not overwrite:
        raise SlimbenchError(
            f"{', '.join(str(p) for p in theirs)} exist and were not written by slimbench; choose another --out, "
            "or pass --overwrite to move them aside (nothing is deleted)"
        )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for path in theirs:
        path.rename(path.with_name(f"{path.name}.replaced-{stamp}"))


def write_report(paths: list[Path], out_dir: Path, overwrite: bool = False) -> Path:
    """Write `report.md` and `report.csv` under `out_dir`; returns the Markdown path."""
    out_dir = Path(out_dir)
    if out_dir.is_dir():
        _claim_outputs(out_dir, overwrite)
    table = summary_table(load_results(paths))
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_cols = [c for c in table.columns if c != "env"]
    table[csv_cols].to_csv(out_dir / "report.csv", index=False)
    lines = [
        REPORT_HEADER,
        "",
        f"Sources: {', '.join(str(p) for p in paths)}. Latency is per batch; speedup is baseline p50 / variant p50 "
        "on the same hardware and workload. *Within budget*: the variant's metric is at least 99% of the "
        "baseline's (MLPerf's rule); for perplexity, at most 1% above it. Causal LM workloads: a prompt of "
        f"*seq* tokens, then {NEW_TOKENS} greedy tokens generated; tokens/s counts generated tokens; "
        f"perplexity on {EVAL_BLOCKS} blocks of the held-out text. Peak RSS is the measuring process's own (one fresh "
        "process per variant, its peak reset before each workload). CV: standard deviation / mean of the latency; "
        "*unstable* above 10%.",
        "",
    ]
    for (device, device_name, threads, task), t in table.groupby(
        ["device", "device_name", "num_threads", "task"], sort=False
    ):
        env = t["env"].iloc[0] or {}
        measured, not_run = t[t["status"] == "ok"], t[t["status"] != "ok"]
        lines += [
            f"## {task} on {device}: {device_name}, {threads} thread{'s' if threads != 1 else ''}",
            "",
            f"torch {env.get('torch')}, transformers {env.get('transformers')}, onnxruntime "
            f"{env.get('onnxruntime')}, optimum-onnx {env.get('optimum_onnx')}"
            + (f", CUDA {env.get('cuda')}, driver {env.get('gpu_driver')}" if env.get("cuda") else "")
            + f"; slimbench git {env.get('git_rev')}",
            "",
            *_best_lines(measured),
            "",
            _fmt_table(measured).to_markdown(index=False)
            if len(measured)
            else "No variant was measured here.",
            "",
            *([*_not_run_lines(not_run), ""] if len(not_run) else []),
        ]
    md = out_dir / "report.md"
    md.write_text("\n".join(lines))
    return md
