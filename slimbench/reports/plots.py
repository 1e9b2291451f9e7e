"""Pictures of a report, with matplotlib (Agg, no display): per configuration a Pareto front of
latency against the metric, speedup bars; across configurations a heatmap of speedups."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

MIB = 1024 * 1024


def _figure(width: float = 7.0, height: float = 4.5):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(width, height), dpi=110)


def _png(plt, fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def pareto_front(points: pd.DataFrame, lower_is_better: bool) -> pd.DataFrame:
    """The variants no other variant beats on both latency and the metric."""
    ordered = points.sort_values(["latency_ms_p50", "metric"], ascending=[True, lower_is_better])
    front, best = [], None
    for _, row in ordered.iterrows():
        m = row["metric"]
        if best is None or (m < best if lower_is_better else m > best):
            front.append(row)
            best = m
    return pd.DataFrame(front)


def pareto_png(t: pd.DataFrame, title: str, recommended: str | None, lower_is_better: bool) -> bytes:
    """Latency (log) against the metric at one workload; marker area = peak memory."""
    plt, fig, ax = _figure()
    memory = (
        pd.to_numeric(t["gpu_peak_allocated_bytes"].fillna(t["peak_rss_bytes"]), errors="coerce").fillna(0)
        / MIB
    )
    sizes = 40 + 260 * (memory / max(float(memory.max()), 1.0))
    ax.scatter(
        t["latency_ms_p50"].astype(float),
        t["metric"].astype(float),
        s=sizes.astype(float),
        alpha=0.55,
        color="#3b6ea8",
        edgecolor="black",
    )
    front = pareto_front(t, lower_is_better)
    ax.plot(front["latency_ms_p50"], front["metric"], "--", color="#c0392b", label="Pareto front")
    for _, row in t.iterrows():
        label = row["variant"] + (" (baseline)" if row["recipe"] == "baseline" else "")
        label += " - recommended" if row["variant"] == recommended else ""
        weight = "bold" if row["variant"] == recommended or row["recipe"] == "baseline" else "normal"
        ax.annotate(label, (row["latency_ms_p50"], row["metric"]), fontsize=8, weight=weight,
                    xytext=(5, 4), textcoords="offset points")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency per batch, ms (log scale)")
    ax.set_ylabel(t["metric_name"].iloc[0])
    ax.set_title(title, fontsize=10)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    return _png(plt, fig)


def speedup_png(t: pd.DataFrame, title: str) -> bytes:
    """Speedup over the baseline per variant and workload (bars), 1x marked."""
    plt, fig, ax = _figure()
    pivot = t.pivot_table(index="variant", columns="workload", values="speedup_vs_baseline")
    pivot = pivot.loc[pivot.max(axis=1).sort_values().index]
    pivot.plot.barh(ax=ax, width=0.8)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xlabel("speedup over baseline (p50)")
    ax.set_ylabel("")
    ax.set_title(title, fontsize=10)
    ax.legend(title="workload", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _png(plt, fig)


def heatmap_png(matrix: pd.DataFrame, title: str) -> bytes:
    """Variant x configuration speedups; empty cells (not run, not measured) stay blank."""
    plt, fig, ax = _figure(max(5.0, 2.2 + 1.6 * len(matrix.columns)), max(3.0, 0.9 + 0.42 * len(matrix)))
    values = matrix.to_numpy(dtype=float)
    shown = np.ma.masked_invalid(values)
    image = ax.imshow(shown, cmap="RdYlGn", aspect="auto", vmin=0, vmax=max(2.0, float(np.nanmax(values)) if
                      np.isfinite(values).any() else 2.0))  # fmt: skip
    ax.set_xticks(range(len(matrix.columns)), matrix.columns, rotation=20, ha="right", fontsize=8)
    ax.set_yticks(range(len(matrix.index)), matrix.index, fontsize=8)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            text = "-" if not np.isfinite(values[i, j]) else f"{values[i, j]:.2f}x"
            ax.text(j, i, text, ha="center", va="center", fontsize=8)
    fig.colorbar(image, ax=ax, label="speedup over baseline")
    ax.set_title(title, fontsize=10)
    return _png(plt, fig)
