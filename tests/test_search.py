"""Search recipes: grid parsing, the choice rule, and one small end-to-end search."""

import dataclasses
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
    assert len(load_recipe("fastest-within-1pct").candidates) == 8
    assert load_recipe("fastest-within-1pct").device == "cpu"


def test_gpu_search_finishes_in_half_precision_compiled_and_measures_on_cuda():
    from slimbench.optimize import steps

    search = load_recipe("fastest-within-1pct-gpu")
    assert search.device == "cuda" and len(search.candidates) == 8
    finishes = {tuple((c.name, c.config.dtype if c.name == "precision" else None) for c in r.steps[-2:])
                for r in search.candidates}  # fmt: skip
    assert finishes == {
        (("precision", "float16"), ("compile", None)),
        (("precision", "bfloat16"), ("compile", None)),
    }
    assert [s.name for s in search.candidates[0].steps] == [
        "precision",
        "compile",
    ]  # unpruned: the finish alone
    for recipe in search.candidates:
        assert not any(steps()[call.name].refuses("text-classification") for call in recipe.steps)


def test_a_finish_of_several_steps():
    grid = {
        **GRID["grid"],
        "finish": [[{"precision": {"dtype": "bfloat16"}}, {"compile": {}}], {"dynamic-int8": {}}],
    }
    search = parse_search({"name": "multi", "grid": grid}, "test")
    assert [[s.name for s in c.steps] for c in search.candidates][:2] == [
        ["prune", "recover", "precision", "compile"],
        ["prune", "recover", "dynamic-int8"],
    ]
    assert search.finishes == (0, 1, 0, 1)
    with pytest.raises(RecipeError, match="grid: device must be cpu, cuda or cuda:N, got 'tpu'"):
        parse_search({"name": "x", "grid": {**GRID["grid"], "device": "tpu"}}, "test")


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


def test_search_order_most_pruned_first():
    from slimbench.optimize.search import search_order

    search = parse_search(GRID, "test")
    assert search.levels == (0, 0, 1, 1) and search.finishes == (0, 1, 0, 1)
    assert [search.candidates[i].name for i in search_order(search)] == [
        "tiny-search-03", "tiny-search-04", "tiny-search-01", "tiny-search-02"
    ]  # fmt: skip
    unpruned = parse_search(
        {"name": "u", "grid": {**GRID["grid"], "prune": [None, GRID["grid"]["prune"][0]]}}, "t"
    )
    assert [s.name for s in unpruned.candidates[0].steps] == ["export"]  # null: the finish alone


def _search(tiny_bert, eval_jsonl, tmp_path, **kw):
    from slimbench.bench.timing import TimingPlan
    from slimbench.core.checkpoint import Checkpoint
    from slimbench.core.data import LabelledText
    from slimbench.optimize.search import run_search

    train = LabelledText(TEXTS * 2, [i % len(LABELS) for i in range(len(TEXTS) * 2)])
    kwargs = {"plan": TimingPlan(warmup=1, min_reps=2, min_seconds=0), "num_threads": 1, "progress": False}
    logs = []
    final = run_search(parse_search(GRID, "test"), Checkpoint.open(tiny_bert), tmp_path, eval_path=eval_jsonl,
                       train_data=train, sample_texts=TEXTS, bench_kwargs=kwargs, log=logs.append, **kw)  # fmt: skip
    return json.loads((final / "slimbench.json").read_text())["search"], logs


def test_search_stops_early_where_a_candidate_cannot_win(tiny_bert, eval_jsonl, tmp_path):
    """Within a 1% budget of a random model every candidate keeps it: the most pruned of each finish is
    built and measured, the less pruned cannot be faster and are not built."""
    from slimbench.bench.runner import read_results

    manifest, logs = _search(tiny_bert, eval_jsonl, tmp_path, budget=0.01)
    measured = {r["variant"] for r in read_results(tmp_path / "tiny-search.jsonl")}
    assert measured == {"baseline", "tiny-search-03", "tiny-search-04"}
    assert set(manifest["not_built_cannot_win"]) == {"tiny-search-01", "tiny-search-02"}
    assert (
        "tiny-search-03 (same finish, pruned further) kept the budget"
        in manifest["not_built_cannot_win"]["tiny-search-01"]
    )
    assert not (tmp_path / "tiny-search-01").exists()
    assert manifest["chosen"] in measured and len(manifest["candidates"]) == 2
    assert manifest["candidates"][0]["variant"] == manifest["chosen"]  # the fastest, all within budget
    assert any("2 measured, 2 could not win, 0 refused, 0 out of time" in line for line in logs)


def test_search_time_budget_builds_at_least_one_and_names_the_rest(tiny_bert, eval_jsonl, tmp_path):
    manifest, logs = _search(tiny_bert, eval_jsonl, tmp_path, budget=0.01, max_minutes=0)
    assert manifest["not_built_time_budget"] == ["tiny-search-04", "tiny-search-02"]
    assert list(manifest["not_built_cannot_win"]) == ["tiny-search-01"]
    assert manifest["chosen"] == "tiny-search-03" and "metric >= 1% of baseline" in manifest["rule"]
    assert manifest["device"] == "cpu" and manifest["rule"].startswith("fastest p50 on cpu at batch 2")
    assert logs[0] == "tiny-search: candidates measured on cpu, at batch 2, seq 16"
    assert any(
        "time budget of 0 min spent; not built: tiny-search-04, tiny-search-02" in line for line in logs
    )
    assert any(
        line.startswith("tiny-search: chose tiny-search-03: ") and "(budget 1%)" in line for line in logs
    )


def test_a_search_measures_where_it_is_asked_and_refuses_a_missing_device_first(
    tiny_bert, eval_jsonl, tmp_path
):
    from slimbench import SlimbenchError
    from slimbench.backends import Device
    from slimbench.core.checkpoint import Checkpoint
    from slimbench.pipeline import run

    if Device("cuda").unavailable() is None:
        pytest.skip("this machine has a CUDA GPU: the refusal of a missing one cannot be seen here")
    checkpoint = Checkpoint.open(tiny_bert)
    with pytest.raises(SlimbenchError, match="device 'cuda': PyTorch sees no CUDA GPU on this machine"):
        run(
            checkpoint,
            load_recipe("fastest-within-1pct-gpu"),
            tmp_path,
            sample_texts=TEXTS,
            eval_path=eval_jsonl,
        )
    assert not any(tmp_path.iterdir())  # refused before the baseline was built
    with pytest.raises(SlimbenchError, match="'baseline' is not a search"):
        run(checkpoint, load_recipe("baseline"), tmp_path, sample_texts=TEXTS, device="cpu")


def test_the_gpu_search_builds_and_measures_here_on_the_cpu(tiny_bert, eval_jsonl, tmp_path):
    """fastest-within-1pct-gpu asked to measure on the CPU: its most pruned fp16 candidate is pruned, recovered, cast
    and compiled into an AOTInductor package for the CPU, measured, and kept (one candidate: no time for more)."""
    from slimbench.core.checkpoint import Checkpoint
    from slimbench.core.data import LabelledText
    from slimbench.core.manifest import read_manifest
    from slimbench.pipeline import run

    search = dataclasses.replace(load_recipe("fastest-within-1pct-gpu"), batch_size=2, seq_len=16)
    train = LabelledText(TEXTS * 2, [i % len(LABELS) for i in range(len(TEXTS) * 2)])
    logs = []
    final = run(Checkpoint.open(tiny_bert), search, tmp_path, sample_texts=TEXTS, train_data=train,
                eval_path=eval_jsonl, budget=0.01, max_minutes=0, device="cpu", log=logs.append)  # fmt: skip
    manifest = read_manifest(final)
    assert (
        manifest["search"]["device"] == "cpu" and manifest["search"]["chosen"] == "fastest-within-1pct-gpu-07"
    )
    steps = [next(iter(step)) for step in manifest["recipe"]["steps"]]
    assert steps == ["prune", "recover", "precision", "compile"]
    assert manifest["dtype"] == "float16" and manifest["kind"] == "torch-aoti"
    assert "fastest-within-1pct-gpu: candidates measured on cpu, at batch 2, seq 16" in logs


def test_a_device_given_to_optimize_is_where_its_steps_work(tiny_bert, tmp_path):
    """A search's candidates are built on the device it measures on: recovery trains there, compile ("auto")
    targets it, the agreement check runs there; a device that is missing is refused before anything loads."""
    from slimbench import SlimbenchError
    from slimbench.backends import Device
    from slimbench.core.checkpoint import Checkpoint
    from slimbench.core.data import LabelledText
    from slimbench.core.manifest import read_manifest
    from slimbench.optimize.apply import optimize
    from slimbench.optimize.recipes import parse_recipe

    checkpoint = Checkpoint.open(tiny_bert)
    recipe = parse_recipe({"name": "r", "steps": [{"recover": {"epochs": 1, "max_steps": 1}}]}, "test")
    train = LabelledText(TEXTS, [i % len(LABELS) for i in range(len(TEXTS))])
    variant = optimize(checkpoint, recipe, tmp_path, sample_texts=TEXTS, train_data=train, device="cpu",
                       allow_degraded=True, progress=False, log=lambda *a: None)  # fmt: skip
    manifest = read_manifest(variant.path)
    assert manifest["notes"]["recover_device"] == "cpu" and manifest["agreement_check"]["device"] == "cpu"
    if Device.parse("cuda:7").unavailable() is None:
        pytest.skip("this machine has 8 CUDA GPUs: the refusal of a missing one cannot be seen here")
    with pytest.raises(SlimbenchError, match="device 'cuda:7'"):
        optimize(checkpoint, recipe, tmp_path / "b", sample_texts=TEXTS, train_data=train, device="cuda:7",
                 progress=False, log=lambda *a: None)  # fmt: skip
    assert not (tmp_path / "b").exists()
