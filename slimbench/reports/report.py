"""Comparison tables: per device, variant x workload, with speedup over `baseline` on the same
device and workload and the within-budget flag: 99% of the baseline metric (MLPerf's rule), or
at most 1% more perplexity."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from slimbench import SlimbenchError
from slimbench.lm import EVAL_BLOCKS, NEW_TOKENS

BUDGET = 0.99  # a variant is within budget when its metric is >= 99% of the baseline's
LOWER_IS_BETTER = {"perplexity"}  # ... or, for these, at most 1% above it (1 + (1 - BUDGET))
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
    df = pd.DataFrame(rows)
    df = df.sort_values("timestamp").drop_duplicates(
        ["task", "variant", "device", "device_name", "num_threads", "batch_size", "seq_len"], keep="last"
    )
    return df.reset_index(drop=True)


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (hardware, variant, workload) with speedup and budget columns added."""
    hw = ["task", "device", "device_name", "num_threads"]
    base = df[df["recipe"] == "baseline"][[*hw, "batch_size", "seq_len", "latency_ms_p50"]]
    base = base.rename(columns={"latency_ms_p50": "_base_p50"})
    out = df.merge(base, on=[*hw, "batch_size", "seq_len"], how="left")
    out["speedup_vs_baseline"] = out["_base_p50"] / out["latency_ms_p50"]
    ratio = out["metric_ratio_to_baseline"].astype("Float64")
    lower = out["metric_name"].isin(LOWER_IS_BETTER)
    within = ratio.where(lower, other=None) <= 2 - BUDGET
    within = within.where(lower, ratio >= BUDGET)
    out["within_budget"] = within.astype("boolean")  # NA where there is no baseline
    return out.drop(columns=["_base_p50"]).sort_values([*hw, "batch_size", "seq_len", "latency_ms_p50"])


def _fmt_table(t: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "variant": t["variant"],
            "batch": t["batch_size"],
            "seq": t["seq_len"],
            "p50 ms": t["latency_ms_p50"].map("{:.1f}".format),
            "p99 ms": t["latency_ms_p99"].map("{:.1f}".format),
            ("tokens/s" if t["task"].iloc[0] == "causal-lm" else "items/s"): t["throughput_items_per_s"].map(
                "{:.1f}".format
            ),
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
        }
    )


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


def write_report(paths: list[Path], out_dir: Path) -> Path:
    """Write `report.md` and `report.csv` under `out_dir`; returns the Markdown path."""
    table = summary_table(load_results(paths))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_cols = [c for c in table.columns if c != "env"]
    table[csv_cols].to_csv(out_dir / "report.csv", index=False)
    lines = [
        "# slimbench report",
        "",
        f"Sources: {', '.join(str(p) for p in paths)}. Latency is per batch; speedup is baseline p50 / variant p50 "
        "on the same hardware and workload. *Within budget*: the variant's metric is at least 99% of the "
        "baseline's (MLPerf's rule); for perplexity, at most 1% above it. Causal LM workloads: a prompt of "
        f"*seq* tokens, then {NEW_TOKENS} greedy tokens generated; tokens/s counts generated tokens; "
        f"perplexity on {EVAL_BLOCKS} blocks of the held-out text. Peak RSS is the measuring process's own (one fresh process per "
        "variant and workload).",
        "",
    ]
    for (device, device_name, threads, task), t in table.groupby(
        ["device", "device_name", "num_threads", "task"], sort=False
    ):
        env = t["env"].iloc[0] or {}
        lines += [
            f"## {task} on {device}: {device_name}, {threads} thread{'s' if threads != 1 else ''}",
            "",
            f"torch {env.get('torch')}, transformers {env.get('transformers')}, onnxruntime "
            f"{env.get('onnxruntime')}, optimum-onnx {env.get('optimum_onnx')}"
            + (f", CUDA {env.get('cuda')}, driver {env.get('gpu_driver')}" if env.get("cuda") else "")
            + f"; slimbench git {env.get('git_rev')}",
            "",
            *_best_lines(t),
            "",
            _fmt_table(t).to_markdown(index=False),
            "",
        ]
    md = out_dir / "report.md"
    md.write_text("\n".join(lines))
    return md
