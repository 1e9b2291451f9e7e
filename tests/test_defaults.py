import re

import pytest

from slimbench.defaults import FineTune, bbc_news, split


def test_bbc_news_is_read_from_the_installed_package():
    data, topics = bbc_news()
    assert len(data) == 2225
    assert topics == ["business", "entertainment", "politics", "sports", "tech"]
    assert sorted(set(data.labels)) == [0, 1, 2, 3, 4]
    assert all(text.strip() for text in data.texts)


def test_split_is_seeded_and_disjoint():
    data, _ = bbc_news()
    train, held = split(data, 400, seed=0)
    again_train, again_held = split(data, 400, seed=0)
    assert len(held) == 400 and len(train) == 1825
    assert held.texts == again_held.texts and train.texts == again_train.texts
    assert split(data, 400, seed=1)[1].texts != held.texts


@pytest.mark.slow
def test_demo_end_to_end_on_the_real_default(tmp_path, monkeypatch):
    """The README's main job: fine-tuned default (>= 97% held out), four variants, bench, report."""
    from slimbench.bench.runner import read_results
    from slimbench.cli import main
    from slimbench.defaults import default_encoder

    default = default_encoder(FineTune())
    assert default.info["eval_accuracy"] >= 0.97
    assert sum(1 for _ in open(default.eval_path)) == 400
    out = tmp_path / "out"
    assert main(["demo", "--out", str(out), "--warmup", "1", "--min-reps", "3", "--min-seconds", "0"]) == 0
    records = read_results(out / "results.jsonl")
    seen = {(r["variant"], r["batch_size"], r["seq_len"]) for r in records}
    for variant in ("baseline", "torch-int8", "onnx", "onnx-o2-int8"):
        assert {(variant, 1, 128), (variant, 32, 128)} <= seen
    by_variant = {r["variant"]: r for r in records}
    assert by_variant["baseline"]["metric"] == pytest.approx(default.info["eval_accuracy"], abs=0.0026)
    assert by_variant["onnx"]["agreement_with_baseline"] >= 0.99
    assert by_variant["onnx-o2-int8"]["metric_ratio_to_baseline"] >= 0.98
    report = (out / "report.md").read_text()
    for variant in ("baseline", "torch-int8", "onnx", "onnx-o2-int8"):
        assert re.search(rf"^\| {variant} +\| +1 \| +128 \|", report, re.M), variant
        assert re.search(rf"^\| {variant} +\| +32 \| +128 \|", report, re.M), variant
    assert (out / "report.csv").is_file()


@pytest.mark.slow
def test_demo_goes_on_past_a_recipe_this_machine_cannot_build(tmp_path, capsys):
    from slimbench.backends import Device
    from slimbench.bench.runner import read_results
    from slimbench.cli import main

    if (Device.best().compute_capability() or (0, 0)) >= (8, 9):
        pytest.skip("this machine builds fp8 (a GPU of compute capability 8.9+)")
    out = tmp_path / "out"
    args = ["demo", "--out", str(out), "--recipes", "fp8,baseline", "--batch-sizes", "1", "--warmup", "1",
            "--min-reps", "2", "--min-seconds", "0"]  # fmt: skip
    assert main(args) == 0
    err = capsys.readouterr().err
    assert re.search(
        r"^\[fp8\] not built: .*float8-dynamic needs a CUDA GPU of compute capability 8\.9", err, re.M
    )
    assert [(r["variant"], r["status"]) for r in read_results(out / "results.jsonl")] == [("baseline", "ok")]
    assert not (out / "models" / "fp8").exists()


@pytest.mark.slow
def test_demo_of_the_sentence_embedding_default(tmp_path):
    """`demo --task feature-extraction`: all-MiniLM-L6-v2 as sentence-transformers ships it, scored by the
    nearest-neighbour accuracy of its embeddings on the 400 held-out articles; its int8 variant keeps it and
    loads with SentenceTransformer."""
    from sentence_transformers import SentenceTransformer

    from slimbench.bench.runner import read_results
    from slimbench.cli import main
    from slimbench.core.data import read_labelled
    from slimbench.defaults import default_sentence_encoder

    default = default_sentence_encoder()
    assert default.info["pooling"] == ["mean"] and default.info["eval_nn_accuracy"] > 0.85
    held = split(bbc_news()[0], FineTune().eval_size, FineTune().seed)[
        1
    ]  # the encoder default's held-out split
    assert read_labelled(default.eval_path).texts == held.texts
    out = tmp_path / "out"
    args = ["demo", "--task", "feature-extraction", "--out", str(out), "--recipes", "baseline,torch-int8,onnx-o2-int8",
            "--batch-sizes", "8", "--warmup", "1", "--min-reps", "2", "--min-seconds", "0"]  # fmt: skip
    assert main(args) == 0
    by_variant = {r["variant"]: r for r in read_results(out / "results.jsonl")}
    assert by_variant["baseline"]["metric_name"] == "nn_accuracy"
    assert by_variant["baseline"]["metric"] == pytest.approx(default.info["eval_nn_accuracy"], abs=0.0026)
    assert by_variant["torch-int8"]["metric_ratio_to_baseline"] >= 0.98
    assert by_variant["onnx-o2-int8"]["metric_ratio_to_baseline"] >= 0.98
    model = SentenceTransformer(str(out / "models" / "onnx-o2-int8"), backend="onnx", device="cpu")
    assert model.encode(["Shares rose."]).shape == (1, 384)
