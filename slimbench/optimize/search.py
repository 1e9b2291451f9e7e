"""Search recipes: build every candidate of a grid, measure them all in one bench run, keep the
fastest whose metric is within budget (>= 99% of the baseline's). Every candidate tried is a
record in the results file, so the choice can be audited."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from slimbench import SlimbenchError
from slimbench.core.artifacts import replace_dir
from slimbench.core.manifest import MANIFEST, read_manifest
from slimbench.optimize.apply import DegradedVariant, optimize
from slimbench.optimize.recipes import Search, load_recipe
from slimbench.tasks import BUDGET, get_task


def choose(
    records: list[dict], candidates: list[str], batch_size: int, seq_len: int, budget: float = BUDGET
) -> tuple[str | None, list[dict]]:
    """The fastest candidate at the workload whose metric ratio is within budget (the task's rule),
    and the table."""
    rows = [
        r
        for r in records
        if r["variant"] in candidates and (r["batch_size"], r["seq_len"]) == (batch_size, seq_len)
    ]
    table = sorted(
        ({"variant": r["variant"], "latency_ms_p50": r["latency_ms_p50"], "metric": r["metric"],
          "metric_ratio_to_baseline": r["metric_ratio_to_baseline"],
          "within_budget": bool(get_task(r.get("task", "text-classification")).within_budget(
              r["metric_ratio_to_baseline"], budget))} for r in rows),
        key=lambda row: row["latency_ms_p50"],
    )  # fmt: skip
    winner = next((row["variant"] for row in table if row["within_budget"]), None)
    return winner, table


def with_budget(recipe, budget: float):
    """The candidate with every accuracy-aware step held to the search's budget."""
    import dataclasses

    calls = tuple(
        dataclasses.replace(c, config=dataclasses.replace(c.config, fallback_budget=budget))
        if getattr(c.config, "fallback_budget", None) is not None else c
        for c in recipe.steps
    )  # fmt: skip
    return dataclasses.replace(recipe, steps=calls)


def search_order(search: Search) -> list[int]:
    """Candidates most pruned first, then in the grid's order of finishes: once a finish keeps the budget at
    one pruning level, its less pruned candidates are slower and cannot win."""
    return sorted(range(len(search.candidates)), key=lambda i: (-search.levels[i], search.finishes[i]))


def run_search(search: Search, checkpoint, out_dir: Path, *, eval_path: Path, train_data, sample_texts,
               bench_kwargs: dict, gate_kwargs: dict | None = None, budget: float = BUDGET,
               max_minutes: float | None = None, log=print) -> Path:  # fmt: skip
    """Build, measure and choose; the winner is copied to `<out_dir>/<search.name>/`.

    Candidates are built and measured one at a time, most pruned first (`search_order`); a candidate that
    cannot win (a more pruned one with the same finish kept the budget) is not built. With `max_minutes`,
    no candidate is started once that much time has gone (at least one is built). A candidate refused by
    the agreement check or whose accuracy-aware step could not keep the budget is named, not measured.
    Every candidate's fate is in the winner's manifest and the log. Accuracy-aware steps score on the
    training data, so the held-out data that chooses the winner did not tune it."""
    import time

    from slimbench.bench import run_bench
    from slimbench.bench.runner import read_results

    started = time.monotonic()
    gate_kwargs = gate_kwargs or {}
    overwrite = gate_kwargs.get("overwrite", False)
    where = bench_kwargs.get("device")  # the candidates are built there too
    device = str(where or "cpu")
    log(f"{search.name}: candidates measured on {device}, at batch {search.batch_size}, seq {search.seq_len}")
    base_dir = optimize(checkpoint, load_recipe("baseline"), out_dir, sample_texts=sample_texts, overwrite=overwrite,
                        device=where, log=log).path  # fmt: skip
    results = out_dir / f"{search.name}.jsonl"
    sizes = sorted({1, search.batch_size})
    names = [c.name for c in search.candidates]
    refused, skipped, cannot_win, built = {}, [], {}, 0
    kept: dict[int, str] = {}  # finish -> the most pruned candidate of it that kept the budget
    for i in search_order(search):
        recipe = with_budget(search.candidates[i], budget)
        if search.finishes[i] in kept:
            cannot_win[recipe.name] = (
                f"{kept[search.finishes[i]]} (same finish, pruned further) kept the budget"
            )
            log(f"{recipe.name}: not built: it cannot win, {cannot_win[recipe.name]}")
            continue
        if max_minutes is not None and built and time.monotonic() - started > max_minutes * 60:
            skipped.append(recipe.name)
            continue
        built += 1
        try:
            path = optimize(checkpoint, recipe, out_dir, sample_texts=sample_texts, train_data=train_data, log=log,
                            device=where, **gate_kwargs).path  # fmt: skip
        except (DegradedVariant, SlimbenchError) as e:  # not measured; named in the winner's manifest
            refused[recipe.name] = str(e)
            log(f"{recipe.name}: refused: {e}")
            continue
        run_bench([base_dir, path], eval_path, sizes, [search.seq_len], results, baseline="baseline", log=log,
                  **bench_kwargs)  # fmt: skip
        won, _ = choose(read_results(results), [recipe.name], search.batch_size, search.seq_len, budget)
        if won:
            kept[search.finishes[i]] = recipe.name
    if skipped:
        log(f"{search.name}: time budget of {max_minutes:g} min spent; not built: {', '.join(skipped)}")
    measured = read_results(results)
    winner, table = choose(measured, names, search.batch_size, search.seq_len, budget)
    if winner is None and len(refused) == len(names):
        raise SlimbenchError(f"{search.name}: every candidate was refused for this checkpoint (the first: "
                             f"{next(iter(refused.values()))}); the built-in recipes that apply, one by one, and "
                             "`slimbench report`, choose among what does")  # fmt: skip
    if winner is None:
        raise SlimbenchError(
            f"{search.name}: no candidate kept {budget:.0%} of the baseline's metric; see {results}"
            + (f" ({len(skipped)} not built within {max_minutes:g} min)" if skipped else "")
        )
    final = out_dir / search.name
    with tempfile.TemporaryDirectory(prefix=f".{search.name}.partial-", dir=out_dir) as tmp:
        staged = Path(tmp) / search.name
        shutil.copytree(out_dir / winner, staged)
        manifest = read_manifest(staged)
        manifest["search"] = {"name": search.name, "chosen": winner, "results": str(results), "candidates": table,
                              "refused": refused, "not_built_cannot_win": cannot_win,
                              "not_built_time_budget": skipped,
                              "device": device,
                              "rule": f"fastest p50 on {device} at batch {search.batch_size}, seq {search.seq_len}, "
                                      f"metric >= {budget:.0%} of baseline"}  # fmt: skip
        manifest.setdefault("metrics", {})["search_winner"] = winner
        (staged / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        replace_dir(staged, final, overwrite, log=log)
    best = next(row for row in table if row["variant"] == winner)
    base = next((r for r in measured if r["variant"] == "baseline" and r["batch_size"] == search.batch_size
                 and r["seq_len"] == search.seq_len and r.get("status", "ok") == "ok"), None)  # fmt: skip
    speed = f", {base['latency_ms_p50'] / best['latency_ms_p50']:.2f}x the baseline" if base else ""
    log(f"{search.name}: chose {winner}: {best['latency_ms_p50']:.1f} ms p50 at batch {search.batch_size}{speed}, "
        f"{best['metric_ratio_to_baseline']:.2%} of the baseline's metric (budget {budget:.0%}); "
        f"{len(table)} measured, {len(cannot_win)} could not win, {len(refused)} refused, {len(skipped)} out of time")  # fmt: skip
    return final
