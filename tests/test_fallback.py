"""Accuracy-aware int8: where int8 everywhere loses the budget, the sensitivity of each layer is
measured and the most sensitive kept in fp32. A tiny model with one deliberately fragile layer: the
fallback must find it."""

import random

import pytest
import torch

from conftest import TEXTS, make_tiny_bert
from slimbench.core.checkpoint import Checkpoint
from slimbench.core.data import LabelledText
from slimbench.core.manifest import read_manifest
from slimbench.optimize.recipes import parse_recipe
from slimbench.pipeline import optimize

FALLBACK = {"name": "int8-fallback", "steps": [{"export": {"quantize": "dynamic-int8", "fallback_budget": 0.99,
                                                           "max_fp32_layers": 3}}]}  # fmt: skip
FRAGILE = "classifier"


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
    """A tiny BERT trained to tell five topics apart, then given one fragile layer: the classifier
    multiplies a pooled feature that is always zero by a weight of 1000. fp32 cannot tell (that feature is
    always 0); per-tensor int8 scales the whole layer by 1000/127 and rounds every other weight to
    zero. Labels are the fp32 model's own predictions, so fp32 is 100% accurate."""
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
        pooler = model.get_submodule("bert.pooler.dense")
        pooler.weight[0], pooler.bias[0] = 0.0, 0.0  # pooled feature 0 is tanh(0) = 0, always
        model.get_submodule(FRAGILE).weight[:, 0] = 1000.0
    model.save_pretrained(path)
    data = sentences(160, seed=1)
    enc = tokenizer(data.texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.inference_mode():
        labels = model(**enc).logits.argmax(-1).tolist()
    assert len(set(labels)) >= 4, "the trained model should tell the topics apart"
    return path, LabelledText(data.texts, labels)


def test_fallback_finds_the_fragile_layer_and_keeps_the_budget(fragile_bert, tmp_path):
    path, data = fragile_bert
    variant = optimize(Checkpoint.open(path), parse_recipe(FALLBACK), tmp_path, sample_texts=TEXTS, eval_data=data,
                       log=lambda *_: None)  # fmt: skip
    notes = read_manifest(variant.path)["notes"]["fallback"]
    assert notes["data"] == "eval" and notes["fp32_accuracy"] == 1.0
    assert notes["int8_everywhere_accuracy"] < 0.9, "int8 everywhere should lose the budget on this model"
    assert "classifier" in notes["fp32_layers"][0]  # the fragile layer is the most sensitive
    assert notes["int8_accuracy"] >= 0.99 and notes["steps"][-1]["accuracy"] == notes["int8_accuracy"]
    assert list(notes["sensitivity"])[0] == notes["fp32_layers"][0]
    assert read_manifest(variant.path)["source"]["eval_data_sha256"]


def test_fallback_needs_labelled_data_and_a_dynamic_int8_export(fragile_bert, tmp_path):
    from slimbench import RecipeError, SlimbenchError

    with pytest.raises(SlimbenchError, match="fallback_budget needs labelled data"):
        optimize(Checkpoint.open(fragile_bert[0]), parse_recipe(FALLBACK), tmp_path, sample_texts=TEXTS,
                 log=lambda *_: None)  # fmt: skip
    with pytest.raises(RecipeError, match="fallback_budget applies to quantize dynamic-int8"):
        parse_recipe({"name": "r", "steps": [{"export": {"fallback_budget": 0.99}}]})
