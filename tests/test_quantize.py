"""bitsandbytes and torchao quantization on a tiny model: module types, weight bytes, save -> reload."""

import pytest
import torch

from conftest import TEXTS, make_tiny_bert
from slimbench.core.checkpoint import Checkpoint
from slimbench.optimize.context import StepContext
from slimbench.optimize.quantize import QuantizeConfig, quantize
from slimbench.optimize.recipes import parse_recipe


@pytest.fixture(scope="module")
def bert64(tmp_path_factory):
    """Hidden size 64: every Linear takes whole 64-wide blocks, so bitsandbytes 4-bit quantizes them all."""
    return make_tiny_bert(tmp_path_factory.mktemp("bert64"), hidden_size=64)


@pytest.fixture
def ctx(bert64, tmp_path):
    checkpoint = Checkpoint.open(bert64)
    return StepContext(checkpoint, checkpoint.load_tokenizer(), tmp_path, TEXTS)


def linear_weight_bytes(model, leave_out=()):
    return sum(
        m.weight.numel() * m.weight.element_size()
        for name, m in model.named_modules()
        if hasattr(m, "weight") and "Linear" in type(m).__name__ and not name.startswith("classifier")
        and name not in leave_out
    )  # fmt: skip


@pytest.mark.parametrize(
    "config, module, max_ratio",
    [
        (QuantizeConfig(bits=8), "Linear8bitLt", 0.26),
        (QuantizeConfig(bits=4, quant_type="nf4"), "Linear4bit", 0.26),
        (QuantizeConfig(bits=4, quant_type="fp4", double_quant=False), "Linear4bit", 0.26),
    ],
)
def test_bitsandbytes_replaces_linears(ctx, config, module, max_ratio):
    fp32 = ctx.checkpoint.load_model()
    model = quantize(fp32, config, ctx)
    names = {type(m).__name__ for m in model.bert.encoder.modules()}
    assert module in names and "Linear" not in names
    kept = ctx.notes.get("not_quantized", {})  # 8-bit: the pooler (tests/test_bnb_int8.py)
    assert linear_weight_bytes(model, kept) <= max_ratio * linear_weight_bytes(
        ctx.checkpoint.load_model(), kept
    )
    enc = ctx.tokenizer(TEXTS[:4], padding=True, return_tensors="pt")
    with torch.inference_mode():
        close = (model(**enc).logits.float() - fp32(**enc).logits).abs().max()
    assert close < 0.5  # quantized, but still the same model


def test_bitsandbytes_4bit_keeps_layers_narrower_than_a_block(tiny_bert, tmp_path):
    checkpoint = Checkpoint.open(tiny_bert)  # hidden 32: narrower than bitsandbytes' 64-wide blocks
    ctx = StepContext(checkpoint, checkpoint.load_tokenizer(), tmp_path, TEXTS)
    model = quantize(checkpoint.load_model(), QuantizeConfig(bits=4), ctx)
    assert "bert.encoder.layer.0.attention.self.query" in ctx.notes["not_quantized"]
    assert "bert.encoder.layer.0.output.dense" not in ctx.notes["not_quantized"]  # takes 64 inputs
    assert type(model.bert.encoder.layer[0].output.dense).__name__ == "Linear4bit"
    enc = ctx.tokenizer(TEXTS[:4], padding=True, return_tensors="pt")
    with torch.inference_mode():  # runs, on every CPU (bitsandbytes' AVX-512-BF16 path included)
        assert model(**enc).logits.shape == (4, 5)


def test_torchao_weight_only_is_saved_and_validated(ctx):
    model = quantize(ctx.checkpoint.load_model(), QuantizeConfig(backend="torchao"), ctx)
    assert model.config.quantization_config.quant_method == "torchao"
    assert ctx.notes["dtype"] == "int8-weight-only"


@pytest.mark.parametrize(
    "params, message",
    [
        ({"bits": 3}, r"bits must be 4 \| 8, got 3"),
        ({"backend": "gptq"}, "backend must be"),
        ({"group_size": 100}, "group_size"),
    ],
)
def test_bad_quantize_parameters(params, message):
    with pytest.raises(Exception, match=message):
        parse_recipe({"name": "r", "steps": [{"quantize": params}]})
