"""Pruning and recovery on tiny models: shapes shrink, sparsity is exact, patterns hold, reloads work."""

import json

import pytest
import torch

from conftest import LABELS, TEXTS
from slimbench.core.checkpoint import Checkpoint
from slimbench.core.data import LabelledText
from slimbench.optimize.context import StepContext
from slimbench.optimize.prune import PruneConfig, is_two_of_four, prunable_linears, prune
from slimbench.optimize.recipes import parse_recipe
from slimbench.optimize.recover import RecoverConfig, recover
from slimbench.pipeline import optimize

TRAIN = LabelledText(TEXTS * 4, [i % len(LABELS) for i in range(len(TEXTS) * 4)])


@pytest.fixture
def ctx(tiny_bert, tmp_path):
    checkpoint = Checkpoint.open(tiny_bert)
    return StepContext(checkpoint, checkpoint.load_tokenizer(), tmp_path, TEXTS, train_data=TRAIN)


def weights(model):
    return [m.weight for m in prunable_linears(model).values()]


@pytest.mark.parametrize("scope", ["global", "per-layer"])
def test_magnitude_sparsity_is_exact(ctx, scope):
    model = prune(
        ctx.checkpoint.load_model(), PruneConfig(method="magnitude", sparsity=0.6, scope=scope), ctx
    )
    ws = weights(model)
    zeros = sum(int((w == 0).sum()) for w in ws)
    assert zeros / sum(w.numel() for w in ws) == pytest.approx(0.6, abs=1e-3)
    assert ctx.notes["sparsity"] == pytest.approx(0.6, abs=1e-3)
    if scope == "per-layer":
        for w in ws:
            assert float((w == 0).float().mean()) == pytest.approx(0.6, abs=0.02)
    assert model.classifier.weight.ne(0).all()  # the task head is not pruned


def test_two_of_four_pattern_holds_in_every_group(ctx):
    model = prune(ctx.checkpoint.load_model(), PruneConfig(method="2:4"), ctx)
    for w in weights(model):
        assert is_two_of_four(w)
        assert int((w.reshape(w.shape[0], -1, 4) != 0).sum(-1).max()) == 2
    assert ctx.notes["sparsity"] == pytest.approx(0.5)
    assert not is_two_of_four(torch.ones(2, 8))


@pytest.mark.parametrize("method", ["magnitude", "2:4"])
def test_gpt2_conv1d_layers_are_pruned_along_their_inputs(ctx, method):
    """GPT-2's Linear layers are transformers' Conv1D, weight stored (in, out)."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(0)
    gpt2 = GPT2ForSequenceClassification(
        GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=100, num_labels=5)
    )
    assert sorted(prunable_linears(gpt2)) == [f"transformer.h.0.{n}" for n in ("attn.c_attn", "attn.c_proj",
                                                                                "mlp.c_fc", "mlp.c_proj")]  # fmt: skip
    pruned = prune(gpt2, PruneConfig(method=method, semi_structured=method == "2:4"), ctx)
    ws = [m.weight for m in prunable_linears(pruned).values()]
    assert sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws) == pytest.approx(0.5, abs=1e-3)
    if method == "2:4":
        assert all(is_two_of_four(w.T) for w in ws) and not any(is_two_of_four(w) for w in ws)
        assert ctx.notes["semi_structured_layers"] == []  # torch's 2:4 kernels take nn.Linear only
    assert pruned.score.weight.ne(0).all()
    with pytest.raises(ValueError, match="Sequential has no Linear layers outside its task head"):
        prune(torch.nn.Sequential(torch.nn.ReLU()), PruneConfig(method=method), ctx)


def test_semi_structured_records_the_layers_its_kernels_take(ctx):
    model = prune(ctx.checkpoint.load_model(), PruneConfig(method="2:4", semi_structured=True), ctx)
    layers = ctx.notes["semi_structured_layers"]
    # the kernels take 64-multiple columns: of the tiny BERT (32 wide, FFN 64) only the FFN outputs qualify
    assert layers == [f"bert.encoder.layer.{i}.output.dense" for i in range(3)]
    assert len(prunable_linears(model)) > len(layers)
    assert ctx.notes["semi_structured"] and ctx.notes["min_compute_capability"] == [8, 0]
    with pytest.raises(ValueError, match="semi_structured applies to method '2:4', not 'magnitude'"):
        PruneConfig(method="magnitude", semi_structured=True)


def pruned_and_reloaded(model, ctx, tmp_path, score):
    """The model with half its heads and FFN neurons and one layer removed, checked smaller and saved, and
    its saved config.json, once the standard loader has given the same logits."""
    from transformers import AutoModelForSequenceClassification

    before = sum(p.numel() for p in model.parameters())
    config = PruneConfig(
        method="structured", heads=0.5, ffn=0.5, layers=1, score=score, calibration_batches=2
    )
    model = prune(model, config, ctx)
    assert sum(p.numel() for p in model.parameters()) < before
    enc = ctx.tokenizer(TEXTS[:3], padding=True, return_tensors="pt")
    with torch.inference_mode():
        expected = model(**enc).logits
    model.save_pretrained(tmp_path / "saved")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved").eval()
    with torch.inference_mode():
        torch.testing.assert_close(reloaded(**enc).logits, expected)
    return model, json.loads((tmp_path / "saved" / "config.json").read_text())


@pytest.mark.parametrize("score", ["taylor", "weight-norm"])
def test_structured_pruning_shrinks_and_reloads(ctx, tmp_path, score):
    model, saved = pruned_and_reloaded(ctx.checkpoint.load_model(), ctx, tmp_path, score)
    assert model.config.num_hidden_layers == 2 and len(model.bert.encoder.layer) == 2
    layer = model.bert.encoder.layer[0]
    assert layer.attention.self.num_attention_heads == 2 and layer.attention.self.query.out_features == 16
    assert layer.intermediate.dense.out_features == 32 and layer.output.dense.in_features == 32
    assert saved["num_hidden_layers"] == 2 and saved["intermediate_size"] == 32


@pytest.mark.parametrize("score", ["taylor", "weight-norm"])
def test_structured_pruning_of_distilbert_shrinks_and_reloads(ctx, tmp_path, score):
    """DistilBERT's layers (transformer.layer[i]: attention.q_lin..., ffn.lin1/lin2) and config fields
    (n_layers, hidden_dim) are cut as BERT's are."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DistilBertConfig

    tokenizer = AutoTokenizer.from_pretrained(
        ctx.checkpoint.path, model_input_names=["input_ids", "attention_mask"]
    )
    ctx = StepContext(ctx.checkpoint, tokenizer, tmp_path, TEXTS, train_data=TRAIN)  # DistilBERT's inputs
    torch.manual_seed(0)
    source = DistilBertConfig(vocab_size=ctx.tokenizer.vocab_size, dim=32, n_layers=3, n_heads=4, hidden_dim=64,
                              max_position_embeddings=128, num_labels=len(LABELS))  # fmt: skip
    source_model = AutoModelForSequenceClassification.from_config(source).eval()
    model, saved = pruned_and_reloaded(source_model, ctx, tmp_path, score)
    assert len(model.distilbert.transformer.layer) == 2 and model.config.n_layers == 2
    layer = model.distilbert.transformer.layer[0]
    assert layer.attention.n_heads == 2 and layer.attention.q_lin.out_features == 16
    assert layer.ffn.lin1.out_features == 32 and layer.ffn.lin2.in_features == 32
    assert saved["n_layers"] == 2 and saved["hidden_dim"] == 32


@pytest.mark.parametrize(
    "model_type, shape",
    [
        ("gpt2", {"n_layer": 1, "n_head": 2, "n_embd": 16}),
        # encoder.layer[i].attention like BERT's, but no head mask and other projections
        ("deberta-v2", {"num_hidden_layers": 2, "num_attention_heads": 2, "hidden_size": 16, "intermediate_size": 32}),
    ],
)  # fmt: skip
def test_structured_refuses_non_bert_models(ctx, model_type, shape):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.for_model(model_type, vocab_size=100, num_labels=5, **shape)
    model = AutoModelForSequenceClassification.from_config(config)
    for prune_config in (
        PruneConfig(method="structured", heads=0.5),
        PruneConfig(method="structured", layers=1),
    ):
        with pytest.raises(ValueError, match="BERT-family encoders"):
            prune(model, prune_config, ctx)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"method": "structured"}, "needs at least one of heads, ffn or layers"),
        ({"method": "magnitude", "heads": 0.5}, "apply to method 'structured'"),
        ({"sparsity": 1.0}, "sparsity must be between 0 and 1"),
        ({"method": 124}, "quote it"),
    ],
)
def test_bad_prune_parameters_fail_validation(params, message):
    with pytest.raises(Exception, match=message):
        parse_recipe({"name": "r", "steps": [{"prune": params}]})


def test_recover_keeps_pruned_weights_zero_and_learns(ctx):
    model = prune(ctx.checkpoint.load_model(), PruneConfig(method="magnitude", sparsity=0.5), ctx)
    before = [w.detach().clone() for w in weights(model)]
    model = recover(model, RecoverConfig(epochs=2, lr=1e-3, batch_size=8, max_len=32), ctx)
    after = weights(model)
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True)), "recovery changed nothing"
    for a, b in zip(after, before, strict=True):
        assert torch.equal(a == 0, b == 0)
    assert ctx.notes["recover_seconds"] > 0


def test_recover_without_training_data_is_refused(ctx):
    ctx.train_data = None
    with pytest.raises(ValueError, match="--train-data"):
        recover(ctx.checkpoint.load_model(), RecoverConfig(), ctx)


def test_pruned_int8_recipe_end_to_end_on_tiny_model(tiny_bert, tmp_path):
    recipe = parse_recipe(
        {
            "name": "tiny-pruned-int8",
            "steps": [
                {"prune": {"method": "structured", "heads": 0.5, "ffn": 0.5, "calibration_batches": 1}},
                {"recover": {"epochs": 1, "batch_size": 8, "max_len": 32}},
                {"export": {"optimize": "O1", "quantize": "static-int8", "calibration_samples": 8}},
            ],
        }
    )
    variant = optimize(Checkpoint.open(tiny_bert), recipe, tmp_path, sample_texts=TEXTS, train_data=TRAIN,
                       log=lambda *_: None)  # fmt: skip
    manifest = json.loads((variant.path / "slimbench.json").read_text())
    assert manifest["dtype"] == "int8" and manifest["kind"] == "onnx"
    assert manifest["notes"]["structured"]["intermediate_size"] == 32
    assert manifest["notes"]["export_parity_max_abs_logit_diff"] < 1e-3
    assert manifest["source"]["train_data_sha256"]
    from optimum.onnxruntime import ORTModelForSequenceClassification

    ort = ORTModelForSequenceClassification.from_pretrained(variant.path)
    assert ort(**ort_inputs(variant.path)).logits.shape == (2, 5)
    import onnx

    ops = {n.op_type for n in onnx.load(str(variant.path / "model.onnx")).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops  # static QDQ


def ort_inputs(path):
    from transformers import AutoTokenizer

    return dict(AutoTokenizer.from_pretrained(path)(TEXTS[:2], padding=True, return_tensors="pt"))


def test_only_data_dependent_variants_record_the_training_data(tiny_bert, tmp_path):
    from slimbench.optimize.recipes import load_recipe

    checkpoint = Checkpoint.open(tiny_bert)
    plain = optimize(
        checkpoint, load_recipe("onnx"), tmp_path, sample_texts=TEXTS, train_data=TRAIN, log=lambda *_: None
    )
    assert json.loads((plain.path / "slimbench.json").read_text())["source"]["train_data_sha256"] is None
    with pytest.raises(Exception, match="--train-data"):
        optimize(checkpoint, load_recipe("pruned-int8"), tmp_path, sample_texts=TEXTS, log=lambda *_: None)


def test_taylor_scores_hold_back_the_sdpa_fallback_warning(ctx, library_notices):
    """The Taylor scores pass BERT a head mask, on which its SDPA attention falls back to eager with a
    transformers warning that tells a slimbench user nothing; it is held back, and the scores are made."""
    from slimbench.optimize.prune import encoder_layout, taylor_scores

    model = ctx.checkpoint.load_model()
    assert model.config._attn_implementation == "sdpa"  # else there is no fallback to warn of
    enc = ctx.tokenizer(TEXTS[:4], padding=True, return_tensors="pt")
    heads, ffn = taylor_scores(model, encoder_layout(model), [(dict(enc), torch.tensor([0, 1, 2, 0]))])
    assert heads.shape == (3, 4) and heads.sum() > 0 and len(ffn) == 3
    assert not [n for n in library_notices if "Falling back to the manual attention" in n]
