"""Search recipes: build every candidate of a grid, measure them all in one bench run, keep the
fastest whose metric is within budget (>= 99% of the baseline's). Every candidate tried is a
record in the results file, so the choice can be audited."""

from __future__ import annotations

import itertools
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimbench import RecipeError, SlimbenchError
from slimbench.recipes import Recipe, parse_recipe
from slimbench.reports.report import BUDGET


@dataclass(frozen=True)
class Search:
    name: str
    candidates: tuple[Recipe, ...]
    batch_size: int
    seq_len: int
    description: str = ""


def parse_search(data: dict, source: str) -> Search:
    """A recipe file with `grid: {prune: [...], recover: {...}, finish: [...]}` instead of `steps`."""
    grid = data.get("grid")
    if not isinstance(grid, dict) or not {"prune", "finish"} <= set(grid):
        raise RecipeError(f"{source}: 'grid' needs 'prune' (a list) and 'finish' (a list of steps)")
    unknown = set(grid) - {"prune", "recover", "finish", "batch_size", "seq_len"}
    if unknown:
        raise RecipeError(f"{source}: grid: unknown key {sorted(unknown)[0]!r}")
    candidates = []
    for i, (prune, finish) in enumerate(itertools.product(grid["prune"], grid["finish"]), start=1):
        steps: list[Any] = [{"prune": prune}]
        if grid.get("recover") is not None:
            steps.append({"recover": grid["recover"]})
        steps.append(finish)
        candidates.append(
            parse_recipe({"name": f"{data['name']}-{i:02d}", "steps": steps}, f"{source}: candidate {i}")
        )
    return Search(data["name"], tuple(candidates), int(grid.get("batch_size", 32)), int(grid.get("seq_len", 128)),
                  data.get("description", ""))  # fmt: skip


def choose(
    records: list[dict], candidates: list[str], batch_size: int, seq_len: int
) -> tuple[str | None, list[dict]]:
    """The fastest candidate at the workload whose metric ratio is within budget, and the table."""
    rows = [
        r
        for r in records
        if r["variant"] in candidates and (r["batch_size"], r["seq_len"]) == (batch_size, seq_len)
    ]
    table = sorted(
        ({"variant": r["variant"], "latency_ms_p50": r["latency_ms_p50"], "metric": r["metric"],
          "metric_ratio_to_baseline": r["metric_ratio_to_baseline"],
          "within_budget": (r["metric_ratio_to_baseline"] or 0) >= BUDGET} for r in rows),
        key=lambda row: row["latency_ms_p50"],
    )  # fmt: skip
    winner = next((row["variant"] for row in table if row["within_budget"]), None)
    return winner, table


def run_search(search: Search, checkpoint, out_dir: Path, *, eval_path: Path, train_data, sample_texts,
               bench_kwargs: dict, log=print) -> Path:  # fmt: skip
    """Build, measure and choose; the winner is copied to `<out_dir>/<search.name>/`."""
    from slimbench.artifacts import MANIFEST, read_manifest, replace_dir
    from slimbench.bench import run_bench
    from slimbench.bench.runner import read_results
    from slimbench.pipeline import optimize
    from slimbench.recipes import load_recipe

    dirs = [optimize(checkpoint, load_recipe("baseline"), out_dir, sample_texts=sample_texts, log=log).path]
    for recipe in search.candidates:
        dirs.append(
            optimize(
                checkpoint, recipe, out_dir, sample_texts=sample_texts, train_data=train_data, log=log
            ).path
        )
    results = out_dir / f"{search.name}.jsonl"
    sizes = sorted({1, search.batch_size})
    run_bench(dirs, eval_path, sizes, [search.seq_len], results, baseline="baseline", log=log, **bench_kwargs)
    names = [c.name for c in search.candidates]
    winner, table = choose(read_results(results), names, search.batch_size, search.seq_len)
    if winner is None:
        raise SlimbenchError(
            f"{search.name}: no candidate kept {BUDGET:.0%} of the baseline's metric; see {results}"
        )
    final = out_dir / search.name
    with tempfile.TemporaryDirectory(prefix=f".{search.name}.partial-", dir=out_dir) as tmp:
        staged = Path(tmp) / search.name
        shutil.copytree(out_dir / winner, staged)
        manifest = read_manifest(staged)
        manifest["search"] = {"name": search.name, "chosen": winner, "results": str(results), "candidates": table,
                              "rule": f"fastest p50 at batch {search.batch_size}, seq {search.seq_len}, metric >= "
                                      f"{BUDGET:.0%} of baseline"}  # fmt: skip
        manifest.setdefault("metrics", {})["search_winner"] = winner
        (staged / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        replace_dir(staged, final)
    log(f"{search.name}: chose {winner}")
    return final
