"""Search recipes: grid parsing, the choice rule, and one small end-to-end search."""

import json

import pytest

from conftest import LABELS, TEXTS
from slimbench import RecipeError
from slimbench.optimize.recipes import builtin_searches, load_recipe, parse_search
from slimbench.optimize.search import choose

GRID = {
    "name": "tiny-search",
    "grid": {
        "batch_size": 2,
        "seq_len": 16,
        "prune": [
            {"method": "structured", "ffn": 0.5, "calibration_batches": 1},
            {"method": "magnitude", "sparsity": 0.3},
        ],
        "recover": {"epochs": 1, "batch_size": 8, "max_len": 16},
        "finish": [{"export": {"optimize": "O2", "quantize": "dynamic-int8"}}, {"dynamic-int8": {}}],
    },
}


def test_grid_expands_to_validated_candidates():
    search = parse_search(GRID, "test")
    assert [c.name for c in search.candidates] == [f"tiny-search-0{i}" for i in range(1, 5)]
    assert [[s.name for s in c.steps] for c in search.candidates][:2] == [
        ["prune", "recover", "export"],
        ["prune", "recover", "dynamic-int8"],
    ]
    bad = json.loads(json.dumps(GRID))
    bad["grid"]["prune"][0]["ffn"] = 2.0
    with pytest.raises(RecipeError, match=r"candidate 1: step 1 'prune': ffn must be in \[0, 1\)"):
        parse_search(bad, "test")
    with pytest.raises(RecipeError, match="needs 'prune'"):
        parse_search({"name": "x", "grid": {"finish": []}}, "test")


def test_builtin_search_is_listed_and_loads():
    assert "fastest-within-1pct" in builtin_searches()
    assert len(load_recipe("fastest-within-1pct").candidates) == 6


def test_choose_takes_the_fastest_within_budget():
    def rec(variant, p50, ratio, bs=32):
        return {"variant": variant, "batch_size": bs, "seq_len": 128, "latency_ms_p50": p50, "metric": 0.9,
                "metric_ratio_to_baseline": ratio}  # fmt: skip

    records = [
        rec("a", 100, 0.95),
        rec("b", 200, 0.995),
        rec("c", 300, 1.0),
        rec("b", 1, 1.0, bs=1),
        rec("base", 50, 1.0),
    ]
    winner, table = choose(records, ["a", "b", "c"], 32, 128)
    assert winner == "b"
    assert [row["variant"] for row in table] == ["a", "b", "c"] and table[0]["within_budget"] is False
    assert choose([rec("a", 1, 0.5)], ["a"], 32, 128)[0] is None


def test_search_end_to_end_on_a_tiny_model(tiny_bert, eval_jsonl, tmp_path):
    from slimbench.bench.runner import read_results
    from slimbench.bench.timing import TimingPlan
    from slimbench.core.checkpoint import Checkpoint
    from slimbench.core.data import LabelledText
    from slimbench.optimize.search import run_search

    search = parse_search(GRID, "test")
    train = LabelledText(TEXTS * 2, [i % len(LABELS) for i in range(len(TEXTS) * 2)])
    kwargs = {"plan": TimingPlan(warmup=1, min_reps=2, min_seconds=0), "num_threads": 1, "progress": False}
    try:
        final = run_search(search, Checkpoint.open(tiny_bert), tmp_path, eval_path=eval_jsonl, train_data=train,
                           sample_texts=TEXTS, bench_kwargs=kwargs, log=lambda *_: None)  # fmt: skip
    except Exception as e:  # a random tiny model may keep no candidate within budget: that is a valid answer
        assert "no candidate kept 99%" in str(e)
        final = None
    records = read_results(tmp_path / "tiny-search.jsonl")
    measured = {r["variant"] for r in records}
    assert measured == {"baseline", *[c.name for c in search.candidates]}  # every candidate is a record
    if final is not None:
        manifest = json.loads((final / "slimbench.json").read_text())
        chosen = manifest["search"]["chosen"]
        assert chosen in measured and len(manifest["search"]["candidates"]) == 4
        within = [row for row in manifest["search"]["candidates"] if row["within_budget"]]
        assert within[0]["variant"] == chosen


def test_search_time_budget_builds_at_least_one_and_names_the_rest(tiny_bert, eval_jsonl, tmp_path):
    from slimbench.bench.timing import TimingPlan
    from slimbench.core.checkpoint import Checkpoint
    from slimbench.core.data import LabelledText
    from slimbench.optimize.search import run_search

    search = parse_search(GRID, "test")
    train = LabelledText(TEXTS * 2, [i % len(LABELS) for i in range(len(TEXTS) * 2)])
    kwargs = {"plan": TimingPlan(warmup=1, min_reps=2, min_seconds=0), "num_threads": 1, "progress": False}
    logs = []
    final = run_search(search, Checkpoint.open(tiny_bert), tmp_path, eval_path=eval_jsonl, train_data=train,
                       sample_texts=TEXTS, bench_kwargs=kwargs, budget=0.5, max_minutes=0, log=logs.append)  # fmt: skip
    manifest = json.loads((final / "slimbench.json").read_text())["search"]
    assert manifest["not_built_time_budget"] == [c.name for c in search.candidates[1:]]
    assert manifest["chosen"] == "tiny-search-01" and "metric >= 50% of baseline" in manifest["rule"]
    assert any("time budget of 0 min spent; not built: tiny-search-02" in line for line in logs)
    assert any(
        line.startswith("tiny-search: chose tiny-search-01: ") and "(budget 50%)" in line for line in logs
    )
