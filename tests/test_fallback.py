"""Accuracy-aware quantization: where quantizing everything loses the budget, the sensitivity of each layer
is measured and the most sensitive kept unquantized. A tiny model with one deliberately fragile layer: the
fallback of every quantizer (ORT dynamic and static int8, torch dynamic int8, torchao, bitsandbytes) must
find it."""

import random

import pytest
import torch

from conftest import TEXTS, make_tiny_bert
from slimbench.core.checkpoint import Checkpoint
from slimbench.core.data import LabelledText
from slimbench.core.manifest import read_manifest
from slimbench.optimize.recipes import parse_recipe
from slimbench.pipeline import optimize

BUDGET = {"fallback_budget": 0.99, "max_fp32_layers": 3}
FALLBACK = {"name": "int8-fallback", "steps": [{"export": {"quantize": "dynamic-int8", **BUDGET}}]}
QUANTIZERS = {
    "ort-dynamic": {"export": {"quantize": "dynamic-int8", **BUDGET}},
    "ort-static": {
        "export": {"quantize": "static-int8", "calibration": "auto", "calibration_samples": 64, **BUDGET}
    },
    "torch-dynamic": {"dynamic-int8": BUDGET},
    "torchao": {"quantize": {"backend": "torchao", "scheme": "int8-weight-only", **BUDGET}},
    "bnb-int8": {"quantize": {"backend": "bitsandbytes", "bits": 8, **BUDGET}},
}
FRAGILE = "bert.pooler.dense"  # quantized by every quantizer but bnb-int8 (transformers leaves the classifier alone)


def sentences(n: int, seed: int = 0) -> LabelledText:
    """Sentences of one topic's words each (the topic is the label), shuffled with filler."""
    rng = random.Random(seed)
    topics = [t.lower().replace(".", "").split() for t in TEXTS[:5]]
    texts, labels = [], []
    for i in range(n):
        label = i % 5
        words = rng.choices(topics[label], k=rng.randint(3, 8)) + rng.choices(["the", "a", "of", "and"], k=2)
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return LabelledText(texts, labels)


@pytest.fixture(scope="module")
def fragile_bert(tmp_path_factory):
    """A tiny BERT trained to tell five topics apart, then given one fragile layer: the pooler multiplies
    a hidden feature that is always zero (the last LayerNorm's weight and bias for it are 0) by a weight of
    1000. fp32 cannot tell; int8 per tensor, per row or per block scales the layer by 1000/127 and rounds
    every other weight to zero. Labels are the fp32 model's own predictions, so fp32 is 100% accurate."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from slimbench.optimize.training import TrainPlan, train_classifier

    path = make_tiny_bert(tmp_path_factory.mktemp("fragile"), seed=3, hidden_size=64)
    model = AutoModelForSequenceClassification.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    train_classifier(
        model, tokenizer, sentences(200), TrainPlan(epochs=4, lr=3e-3, max_len=24), progress=False
    )
    with torch.no_grad():
        norm = model.bert.encoder.layer[-1].output.LayerNorm
        norm.weight[0], norm.bias[0] = 0.0, 0.0  # hidden feature 0 of the last layer is 0, always
        model.get_submodule(FRAGILE).weight[:, 0] = 1000.0
    model.save_pretrained(path)
    data = sentences(160, seed=1)
    enc = tokenizer(data.texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.inference_mode():
        labels = model(**enc).logits.argmax(-1).tolist()
    assert len(set(labels)) >= 4, "the trained model should tell the topics apart"
    return path, LabelledText(data.texts, labels)


@pytest.mark.parametrize("quantizer", list(QUANTIZERS))
def test_fallback_finds_the_fragile_layer_and_keeps_the_budget(fragile_bert, tmp_path, quantizer):
    path, data = fragile_bert
    recipe = parse_recipe({"name": quantizer, "steps": [QUANTIZERS[quantizer]]})
    variant = optimize(Checkpoint.open(path), recipe, tmp_path, sample_texts=TEXTS, eval_data=data, train_data=data,
                       log=lambda *_: None)  # fmt: skip
    notes = read_manifest(variant.path)["notes"]["fallback"]
    assert notes["data"] == "eval" and notes["fp32_accuracy"] == 1.0
    if quantizer == "bnb-int8":
        # the pooler's input is a strided view, which bitsandbytes' CUDA int8 quantizer misreads: bnb-int8
        # keeps it unquantized on every device (tests/test_bnb_int8.py), so nothing fragile is left
        assert FRAGILE in read_manifest(variant.path)["notes"]["not_quantized"]
        assert notes["quantized_everywhere_accuracy"] == 1.0 and notes["fp32_layers"] == []
        return
    assert notes["quantized_everywhere_accuracy"] < 0.9, "quantizing everything should lose the budget here"
    assert FRAGILE in notes["fp32_layers"][0].replace("/", ".")  # the fragile layer is the most sensitive
    assert notes["accuracy"] >= 0.99 and notes["steps"][-1]["accuracy"] == notes["accuracy"]
    assert list(notes["sensitivity"])[0] == notes["fp32_layers"][0]
    assert read_manifest(variant.path)["source"]["eval_data_sha256"]
    if quantizer == "ort-static":  # no calibration setting can save a layer whose weights round to zero
        methods = [(s["method"], s["per_channel"]) for s in notes["settings_tried"]]
        assert methods == [("minmax", False), ("minmax", True), ("percentile", True), ("entropy", True)]


def test_static_int8_calibration_methods(fragile_bert, tmp_path):
    """Each calibration method quantizes (the fallback not asked for): the setting is recorded."""
    path, _ = fragile_bert
    for method in ("percentile", "entropy"):
        recipe = parse_recipe({"name": method, "steps": [{"export": {"quantize": "static-int8", "calibration": method,
                                                                     "per_channel": True, "calibration_samples": 8}}]})  # fmt: skip
        variant = optimize(Checkpoint.open(path), recipe, tmp_path, sample_texts=TEXTS, log=lambda *_: None,
                           min_agreement=0.0)  # fmt: skip
        notes = read_manifest(variant.path)["notes"]
        assert notes["quantization_settings"] == {"method": method, "per_channel": True, "samples": 8}
        assert notes["dtype"] == "int8"


def test_fallback_needs_labelled_data_and_a_dynamic_int8_export(fragile_bert, tmp_path):
    from slimbench import RecipeError, SlimbenchError

    with pytest.raises(SlimbenchError, match="fallback_budget needs labelled data"):
        optimize(Checkpoint.open(fragile_bert[0]), parse_recipe(FALLBACK), tmp_path, sample_texts=TEXTS,
                 log=lambda *_: None)  # fmt: skip
    with pytest.raises(RecipeError, match="fallback_budget applies to quantize"):
        parse_recipe({"name": "r", "steps": [{"export": {"fallback_budget": 0.99}}]})
    with pytest.raises(RecipeError, match="calibration auto needs"):
        parse_recipe({"name": "r", "steps": [{"export": {"quantize": "static-int8", "calibration": "auto"}}]})
    with pytest.raises(RecipeError, match=r"fallback_budget must be in \(0, 1\]"):
        parse_recipe({"name": "r", "steps": [{"dynamic-int8": {"fallback_budget": 1.5}}]})
