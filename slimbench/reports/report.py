"""Comparison across hardware configurations: per configuration the variant x workload table with
speedup over `baseline` on the same hardware and workload and the within-budget flag (99% of the
baseline metric, MLPerf's rule, or at most 1% more perplexity); the recommendation per
configuration and workload; a cross-hardware table with "not run" and "not measured" cells;
plots; an environment appendix. Written as report.md, report.csv, report.html and PNG files."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from slimbench import SlimbenchError
from slimbench.reports.load import config_label, load_results
from slimbench.tasks import BUDGET, get_task
from slimbench.tasks.base import NEW_TOKENS
from slimbench.tasks.causal_lm import EVAL_BLOCKS

MIB = 1024 * 1024
REPORT_HEADER = "# slimbench report"
OUTPUTS = ("report.md", "report.csv", "report.html")
HW = ["task", "device", "device_name", "num_threads"]

__all__ = ["load_results", "summary_table", "write_report"]


def summary_table(df: pd.DataFrame, baseline: str | None = None, budget: float = BUDGET) -> pd.DataFrame:
    """One row per (hardware, variant, workload) with speedup over `baseline` (a variant name;
    default: the variants made by the `baseline` recipe), within `budget`, configuration and workload
    columns."""
    df = df.assign(status=df["status"].fillna("ok") if "status" in df else "ok")  # schema 1 has no status
    is_base = df["variant"] == baseline if baseline else df["recipe"] == "baseline"
    if baseline and not is_base.any():
        raise SlimbenchError(f"--baseline {baseline!r} is not a variant in these results")
    ok = df[is_base & (df["status"] == "ok")]
    base = ok[[*HW, "batch_size", "seq_len", "latency_ms_p50"]].rename(
        columns={"latency_ms_p50": "_base_p50"}
    )
    out = df.merge(base, on=[*HW, "batch_size", "seq_len"], how="left")
    out["speedup_vs_baseline"] = out["_base_p50"] / out["latency_ms_p50"]
    out["within_budget"] = pd.array(
        [get_task(task).within_budget(None if pd.isna(r) else float(r), budget)
         for task, r in zip(out["task"], out["metric_ratio_to_baseline"], strict=True)],
        dtype="boolean",
    )  # NA where there is no baseline  # fmt: skip
    out["config"] = [
        config_label(*row) for row in zip(out["device"], out["device_name"], out["num_threads"], strict=True)
    ]
    out["workload"] = [f"b{b} s{s}" for b, s in zip(out["batch_size"], out["seq_len"], strict=True)]
    return out.drop(columns=["_base_p50"]).sort_values([*HW, "batch_size", "seq_len", "latency_ms_p50"])


def _memory_mib(row) -> float | None:
    value = (
        row["gpu_peak_allocated_bytes"]
        if pd.notna(row["gpu_peak_allocated_bytes"])
        else row["peak_rss_bytes"]
    )
    return None if pd.isna(value) else value / MIB


def _cv(cv, unstable) -> str:
    """Coefficient of variation of the latency, flagged where the record is unstable."""
    if cv is None or pd.isna(cv):
        return ""
    return f"{cv:.0%}" + (" unstable" if unstable is True else "")


def _graphs(recorded, skipped) -> str:
    """CUDA graphs recorded in a cell, and those torch.compile declined to record."""
    if recorded is None or pd.isna(recorded):
        return ""
    return f"{int(recorded)}" + (f", {int(skipped)} skipped" if pd.notna(skipped) and skipped else "")


def _fmt_table(t: pd.DataFrame) -> pd.DataFrame:
    graphs = {}
    if t["cuda_graphs"].notna().any():  # measured on a GPU
        graphs = {
            "CUDA graphs": [
                _graphs(n, s) for n, s in zip(t["cuda_graphs"], t["cuda_graph_skips"], strict=True)
            ]
        }
    generation = {}
    if get_task(t["task"].iloc[0]).generates:  # time to first token and per output token
        generation = {f"{name} ms": t[f"{field}_ms_p50"].map(lambda x: "" if pd.isna(x) else f"{x:.1f}")
                      for name, field in (("TTFT", "ttft"), ("TPOT", "tpot"))}  # fmt: skip
    return pd.DataFrame(
        {
            "variant": t["variant"],
            "batch": t["batch_size"],
            "seq": t["seq_len"],
            "p50 ms": t["latency_ms_p50"].map("{:.1f}".format),
            "p99 ms": t["latency_ms_p99"].map("{:.1f}".format),
            get_task(t["task"].iloc[0]).throughput_unit: t["throughput_items_per_s"].map("{:.1f}".format),
            "speedup": t["speedup_vs_baseline"].map(lambda x: "" if pd.isna(x) else f"{x:.2f}x"),
            **generation,
            "peak RSS MiB": (t["peak_rss_bytes"] / MIB).map("{:.0f}".format),
            "GPU peak MiB": t["gpu_peak_allocated_bytes"].map(
                lambda x: "" if pd.isna(x) else f"{x / MIB:.0f}"
            ),
            "size MiB": (t["size_on_disk_bytes"] / MIB).map("{:.1f}".format),
            t["metric_name"].iloc[0]: t["metric"].map("{:.4f}".format),
            "vs baseline": t["metric_ratio_to_baseline"].map(lambda x: "" if pd.isna(x) else f"{x:.2%}"),
            "agreement": t["agreement_with_baseline"].map(lambda x: "" if pd.isna(x) else f"{x:.2%}"),
            "within budget": t["within_budget"].map(lambda x: "" if pd.isna(x) else ("yes" if x else "no")),
            "reps": t["reps"].map(lambda x: "" if pd.isna(x) else f"{int(x)}"),
            "CV": [_cv(cv, u) for cv, u in zip(t["latency_cv"], t["unstable"], strict=True)],
            **graphs,
        }
    )


def _not_run_lines(t: pd.DataFrame) -> list[str]:
    lines = []
    for (variant, reason), w in t.groupby(["variant", "reason"], sort=False, dropna=False):
        shapes = ", ".join(f"b{b} s{s}" for b, s in zip(w["batch_size"], w["seq_len"], strict=True))
        lines.append(f"- **{variant}** not run ({shapes}): {reason}")
    return lines


def recommendations(table: pd.DataFrame) -> pd.DataFrame:
    """Per task, configuration and workload: the fastest variant within budget."""
    rows = []
    measured = table[table["status"] == "ok"]
    for (task, config, bs, seq), w in measured.groupby(
        ["task", "config", "batch_size", "seq_len"], sort=False
    ):
        ok = w[w["within_budget"].fillna(False).astype(bool)]
        if ok.empty:
            rows.append({"task": task, "config": config, "batch_size": bs, "seq_len": seq, "variant": None})
            continue
        best = ok.sort_values("latency_ms_p50").iloc[0]
        rows.append({
            "task": task, "config": config, "batch_size": bs, "seq_len": seq, "variant": best["variant"],
            "latency_ms_p50": best["latency_ms_p50"], "speedup_vs_baseline": best["speedup_vs_baseline"],
            "memory_mib": _memory_mib(best), "metric_name": best["metric_name"], "metric": best["metric"],
            "metric_ratio_to_baseline": best["metric_ratio_to_baseline"],
        })  # fmt: skip
    return pd.DataFrame(rows)


def _recommendation_table(rec: pd.DataFrame) -> pd.DataFrame:
    def fmt(row):
        if row["variant"] is None or pd.isna(row["variant"]):
            return "no variant within budget (or no baseline measured)"
        speed = "" if pd.isna(row["speedup_vs_baseline"]) else f", {row['speedup_vs_baseline']:.2f}x baseline"
        memory = (
            ""
            if row["memory_mib"] is None or pd.isna(row["memory_mib"])
            else f", {row['memory_mib']:.0f} MiB peak"
        )
        return (f"**{row['variant']}**: {row['latency_ms_p50']:.2f} ms p50{speed}{memory}, {row['metric_name']} "
                f"{row['metric']:.4f} ({row['metric_ratio_to_baseline']:.2%} of baseline)")  # fmt: skip

    return pd.DataFrame(
        {"configuration": rec["config"], "workload": [f"batch {b}, seq {s}" for b, s in
                                                      zip(rec["batch_size"], rec["seq_len"], strict=True)],
         "deploy": [fmt(r) for _, r in rec.iterrows()]}
    )  # fmt: skip


def cross_hardware(table: pd.DataFrame, task: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Variant x (configuration, workload): "p50 ms (speedup)", "not run: reason" or "not measured";
    and the speedups alone (NaN where there is no figure) for the heatmap."""
    t = table[table["task"] == task]
    configs = list(dict.fromkeys(t["config"]))
    workloads = list(dict.fromkeys(t.sort_values(["batch_size", "seq_len"])["workload"]))
    variants = list(dict.fromkeys(t.sort_values("variant")["variant"]))
    cells, speed = {}, {}
    for config in configs:
        for workload in workloads:
            column = f"{config} · {workload}" if len(workloads) > 1 else config
            cells[column], speed[column] = [], []
            for variant in variants:
                hit = t[(t["config"] == config) & (t["workload"] == workload) & (t["variant"] == variant)]
                if hit.empty:
                    cells[column].append("not measured")
                    speed[column].append(float("nan"))
                elif hit["status"].iloc[0] != "ok":
                    cells[column].append(f"not run: {hit['reason'].iloc[0]}")
                    speed[column].append(float("nan"))
                else:
                    r = hit.iloc[0]
                    s = r["speedup_vs_baseline"]
                    cells[column].append(
                        f"{r['latency_ms_p50']:.2f} ms" + ("" if pd.isna(s) else f" ({s:.2f}x)")
                    )
                    speed[column].append(s)
    return pd.DataFrame(cells, index=variants), pd.DataFrame(speed, index=variants)


def _environment_lines(t: pd.DataFrame) -> list[str]:
    env = t["env"].dropna().iloc[0] if t["env"].notna().any() else {}
    keys = ["torch", "transformers", "optimum", "optimum_onnx", "onnxruntime", "onnxruntime_gpu", "bitsandbytes",
            "torchao", "triton", "cuda", "gpu_driver", "gpu_count", "gpu_compute_capability", "gpu_memory_bytes",
            "gpu_sm_clock_mhz", "gpu_max_sm_clock_mhz", "gpu_power_limit_w", "gpu_mig_mode", "python", "cpu_model",
            "platform", "git_rev"]  # fmt: skip
    return [f"- {k}: {env.get(k)}" for k in keys if env.get(k) is not None] + [
        f"- threads: {t['num_threads'].iloc[0]}",
        f"- runs: {', '.join(sorted(set(map(str, t['run_id'].dropna()))))}",
    ]


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


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:60]


def write_report(paths: list[Path], out_dir: Path, overwrite: bool = False, budget: float = BUDGET,
                 baseline: str | None = None, plots: bool = True) -> Path:  # fmt: skip
    """Write report.md, report.csv, report.html and the plots (PNG) under `out_dir`; returns the
    Markdown path."""
    from slimbench.reports import html
    from slimbench.reports import plots as draw

    out_dir = Path(out_dir)
    if out_dir.is_dir():
        _claim_outputs(out_dir, overwrite)
    df = load_results(paths)
    if not 0 < budget <= 1:
        raise SlimbenchError(f"--budget must be in (0, 1], got {budget}")
    table = summary_table(df, baseline, budget)
    out_dir.mkdir(parents=True, exist_ok=True)
    table[[c for c in table.columns if c != "env"]].to_csv(out_dir / "report.csv", index=False)
    rec = recommendations(table)
    images: dict[str, bytes] = {}
    sections = []  # (heading, markdown lines, [(title, DataFrame)], [image names]) for both renderings
    dropped = df.attrs.get("dropped", 0)
    torn = "; ".join(
        f"{path} line(s) {', '.join(map(str, lines))}" for path, lines in df.attrs.get("torn", {}).items()
    )
    intro = [
        f"Sources: {', '.join(str(p) for p in paths)}"
        + (f" ({dropped} older measurement(s) of a cell dropped; the newest kept)" if dropped else "")
        + (
            f" (left out, not whole records, as a run killed while writing leaves them: {torn})"
            if torn
            else ""
        )
        + ". Latency is per batch; speedup is baseline p50 / variant p50 on the same hardware and workload. "
        f"*Within budget*: the variant's metric is at least {budget:.0%} of the baseline's (MLPerf's rule); for "
        f"perplexity, at most {1 - budget:.0%} above it. Generating workloads (causal LM, seq2seq): an input of "
        f"*seq* tokens, then {NEW_TOKENS} greedy tokens generated; tokens/s counts generated tokens; a causal LM's "
        f"perplexity on {EVAL_BLOCKS} blocks of the held-out text. Peak RSS is the measuring process's own (one "
        "fresh process per variant, its "
        "peak reset before each workload). CV: standard deviation / mean of the latency; *unstable* above 10%."
        + (
            " CUDA graphs (GPU): the graphs recorded in the cell (by torch.compile, or captured from a compiled "
            "package); *skipped*: those torch.compile declined to record, so those figures are partly without "
            "graphs."
            if table["cuda_graphs"].notna().any()
            else ""
        ),
    ]
    for task in dict.fromkeys(table["task"]):
        task_rec = rec[rec["task"] == task]
        sections.append((f"Which variant to deploy: {task}", [], [("", _recommendation_table(task_rec))], []))
        cells, speed = cross_hardware(table, task)
        name = f"heatmap-{_slug(task)}.png"
        if plots and speed.notna().any().any():
            images[name] = draw.heatmap_png(speed, f"{task}: speedup over baseline, per configuration")
        sections.append(
            (
                f"Across hardware: {task}",
                [
                    "Each cell: p50 latency (speedup over that configuration's "
                    "baseline); *not run* says why; *not measured*: no record."
                ],  # fmt: skip
                [("", cells.rename_axis("variant").reset_index())],
                [name] if name in images else [],
            )
        )
    for (task, config), t in table.groupby(["task", "config"], sort=False):
        measured, not_run = t[t["status"] == "ok"], t[t["status"] != "ok"]
        pictures = []
        if plots and len(measured):
            lower = get_task(task).lower_is_better
            for (bs, seq), w in measured.groupby(["batch_size", "seq_len"]):
                chosen = rec[(rec["task"] == task) & (rec["config"] == config) & (rec["batch_size"] == bs)
                             & (rec["seq_len"] == seq)]["variant"]  # fmt: skip
                name = f"pareto-{_slug(config)}-{_slug(task)}-b{bs}-s{seq}.png"
                images[name] = draw.pareto_png(w, f"{config}, batch {bs}, seq {seq}", chosen.iloc[0] if len(chosen)
                                               else None, lower)  # fmt: skip
                pictures.append(name)
            name = f"speedup-{_slug(config)}-{_slug(task)}.png"
            images[name] = draw.speedup_png(measured, f"{config}: speedup over baseline")
            pictures.append(name)
        lines = [*(_not_run_lines(not_run) if len(not_run) else [])]
        tables = [("", _fmt_table(measured))] if len(measured) else []
        sections.append((f"{task} on {config}", lines, tables, pictures))
    appendix = [
        (f"Environment: {config}", _environment_lines(t)) for config, t in table.groupby("config", sort=False)
    ]
    for name, data in images.items():
        (out_dir / name).write_bytes(data)

    md = [REPORT_HEADER, "", *intro, ""]
    for heading, lines, tables, pictures in sections:
        md += [f"## {heading}", "", *lines, *([""] if lines else [])]
        for _, frame in tables:
            md += [frame.to_markdown(index=False), ""]
        md += [f"![{p}]({p})" for p in pictures] + ([""] if pictures else [])
    md += ["## Appendix", ""]
    for heading, lines in appendix:
        md += [f"### {heading}", "", *lines, ""]
    (out_dir / "report.md").write_text("\n".join(md))
    (out_dir / "report.html").write_text(html.render("slimbench report", intro, sections, appendix, images))
    return out_dir / "report.md"
