"""The agreement check after optimize: a saved variant is reloaded and compared with its source; a
broken one is refused (nothing under its name) unless --allow-degraded. The precision step."""

import json
from dataclasses import dataclass

import pytest
import torch

from conftest import TEXTS
from slimbench.core.artifacts import read_manifest
from slimbench.core.checkpoint import Checkpoint
from slimbench.optimize.recipes import load_recipe, parse_recipe
from slimbench.pipeline import DegradedVariant, optimize

BROKEN = {"name": "broken", "steps": [{"sabotage": {}}]}


@dataclass(frozen=True)
class SabotageConfig:
    """No parameters."""


def sabotage(model, config, ctx):
    """Negate the classifier: every prediction becomes the least likely class (a silent breakage)."""
    with torch.no_grad():
        model.classifier.weight.neg_()
        model.classifier.bias.neg_()
    return model


@pytest.fixture(autouse=True)
def sabotage_step(monkeypatch):
    """A deliberately broken step, registered for these tests only."""
    from slimbench.optimize import STEPS
    from slimbench.optimize.registry import register

    monkeypatch.setitem(STEPS, "sabotage", register("sabotage", SabotageConfig)(sabotage))


@pytest.fixture(scope="module")
def trained_bert(tmp_path_factory):
    """A tiny BERT whose predictions are not near-ties: its head is scaled up, so int8 or half
    precision keep them and a broken variant is the only one that loses them."""
    from conftest import make_tiny_bert

    path = make_tiny_bert(tmp_path_factory.mktemp("decisive"), seed=1)
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(path)
    with torch.no_grad():
        model.classifier.weight.mul_(40)
    model.save_pretrained(path)
    return path


def test_broken_variant_is_refused_with_its_figures(trained_bert, tmp_path):
    checkpoint = Checkpoint.open(trained_bert)
    with pytest.raises(
        DegradedVariant, match=r"keeps only agreement \d+\.\d% .* on 8 sample inputs.*--allow-degraded"
    ):
        optimize(checkpoint, parse_recipe(BROKEN), tmp_path, sample_texts=TEXTS, log=lambda *_: None)
    assert list(tmp_path.iterdir()) == []  # nothing under its name, no partial directory


def test_allow_degraded_keeps_it_and_the_manifest_says_so(trained_bert, tmp_path):
    checkpoint = Checkpoint.open(trained_bert)
    variant = optimize(checkpoint, parse_recipe(BROKEN), tmp_path, sample_texts=TEXTS, allow_degraded=True,
                       log=lambda *_: None)  # fmt: skip
    check = read_manifest(variant.path)["agreement_check"]
    assert check["checked"] and not check["passed"] and check["agreement"] < 0.9
    assert check["samples"] == len(TEXTS) and check["device"] == "cpu"


@pytest.mark.parametrize("recipe", ["baseline", "onnx", "torch-int8", "bf16"])
def test_sound_variants_pass_and_record_the_check(recipe, trained_bert, tmp_path):
    variant = optimize(Checkpoint.open(trained_bert), load_recipe(recipe), tmp_path, sample_texts=TEXTS,
                       log=lambda *_: None)  # fmt: skip
    check = read_manifest(variant.path)["agreement_check"]
    assert check["checked"] and check["passed"] and check["agreement"] >= 0.9
    if recipe in ("baseline", "onnx"):
        assert check["agreement"] == 1.0 and check["max_abs_logit_diff"] < 1e-3


def test_min_agreement_is_the_callers(trained_bert, tmp_path):
    variant = optimize(Checkpoint.open(trained_bert), parse_recipe(BROKEN), tmp_path, sample_texts=TEXTS,
                       min_agreement=0.0, log=lambda *_: None)  # fmt: skip
    check = read_manifest(variant.path)["agreement_check"]
    assert check["passed"] and check["min_agreement"] == 0.0 and check["agreement"] < 0.9


def test_a_variant_that_cannot_run_here_is_saved_unchecked_with_the_reason(tiny_bert, tmp_path):
    recipe = parse_recipe({"name": "k", "steps": [{"kernels": {}}]})
    variant = optimize(Checkpoint.open(tiny_bert), recipe, tmp_path, sample_texts=TEXTS, log=lambda *_: None)
    check = read_manifest(variant.path)["agreement_check"]
    if torch.cuda.is_available():
        pytest.skip("on a GPU machine the kernels variant is checked on the GPU")
    assert not check["checked"] and "Triton kernels are measured on a CUDA GPU only" in check["reason"]


def test_a_save_that_fails_is_one_slimbench_error_naming_the_recipe(tiny_bert, tmp_path, monkeypatch):
    import slimbench.optimize.apply
    from slimbench import SlimbenchError

    def save_variant(*args, **kwargs):
        raise RuntimeError("cannot serialize a tensor subclass")

    monkeypatch.setattr(slimbench.optimize.apply, "save_variant", save_variant)
    with pytest.raises(SlimbenchError) as failed:
        optimize(
            Checkpoint.open(tiny_bert),
            load_recipe("baseline"),
            tmp_path,
            sample_texts=TEXTS,
            log=lambda *_: None,
        )
    assert str(failed.value) == (
        "recipe 'baseline': saving the variant failed: RuntimeError: cannot serialize a tensor subclass"
    )
    assert list(tmp_path.iterdir()) == []


def test_bf16_is_saved_and_reloaded_in_bf16(trained_bert, tmp_path):
    from transformers import AutoModelForSequenceClassification

    variant = optimize(Checkpoint.open(trained_bert), load_recipe("bf16"), tmp_path, sample_texts=TEXTS,
                       log=lambda *_: None)  # fmt: skip
    manifest = read_manifest(variant.path)
    assert manifest["dtype"] == "bfloat16"
    config = json.loads((variant.path / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "bfloat16"
    reloaded = AutoModelForSequenceClassification.from_pretrained(variant.path, dtype="auto")
    assert {p.dtype for p in reloaded.parameters()} == {torch.bfloat16}
    fp32_bytes = sum(f.stat().st_size for f in trained_bert.glob("*.safetensors"))
    assert manifest["size_on_disk_bytes"] < 0.6 * fp32_bytes


def test_precision_dtype_is_validated():
    from slimbench import RecipeError

    with pytest.raises(RecipeError, match="dtype must be"):
        parse_recipe({"name": "r", "steps": [{"precision": {"dtype": "int8"}}]})
