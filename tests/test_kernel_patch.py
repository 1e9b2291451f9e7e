"""apply_kernels on tiny BERT and Llama models gives the unpatched logits (Triton interpreter)."""

import pytest
import torch

from slimbench.kernels.patch import apply_kernels


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=120, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         attn_implementation="sdpa")  # fmt: skip
    return LlamaForCausalLM(config).eval()


@pytest.fixture
def bert_dir(tmp_path):
    from conftest import make_tiny_bert

    return make_tiny_bert(tmp_path / "bert16", hidden_size=64)  # head dim 16


@pytest.fixture
def bert(bert_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(bert_dir).eval()
    tok = AutoTokenizer.from_pretrained(bert_dir)
    return model, tok(["a short one", "a much longer sentence with padding after the shorter one"], padding=True,
                      return_tensors="pt")  # fmt: skip


@pytest.mark.parametrize(
    "options",
    [
        dict(),
        dict(attention=False),
        dict(norm=False, activation=False),
        dict(weight_only="int8", group_size=32),
    ],
)
def test_patched_bert_matches_unpatched(bert, options):
    model, enc = bert
    with torch.inference_mode():
        want = model(**enc).logits
    replaced = apply_kernels(model, **options)
    assert replaced
    if options.get("attention", True):
        assert any("flash attention" in r for r in replaced)
    with torch.inference_mode():
        got = model(**enc).logits
    atol = 2e-2 if options.get("weight_only") else 1e-4
    torch.testing.assert_close(got, want, atol=atol, rtol=1e-3)


def test_patched_llama_matches_unpatched_with_left_padding():
    model = tiny_llama()
    ids = torch.randint(0, 120, (2, 11))
    mask = torch.ones(2, 11, dtype=torch.long)
    mask[1, :4] = 0  # left padding
    with torch.inference_mode():
        want = model(input_ids=ids, attention_mask=mask).logits
    replaced = apply_kernels(model)
    assert {"RMSNorm", "SwiGLU"} <= {r.split(": ")[1] for r in replaced}
    with torch.inference_mode():
        got = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got[0], want[0], atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(
        got[1, 4:], want[1, 4:], atol=1e-4, rtol=1e-3
    )  # padded positions are don't-care


def test_unsupported_models_and_options_are_refused():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=50))
    with pytest.raises(ValueError, match="BERT-family and Llama-family"):
        apply_kernels(gpt2)
    with pytest.raises(ValueError, match="weight_only must be"):
        apply_kernels(tiny_llama(), weight_only="int3")


def test_attention_with_unsupported_head_dim_stays_on_pytorch(tiny_bert):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert)  # head dim 8
    assert not any("flash attention" in r for r in apply_kernels(model))


def test_kernels_step_saves_loadable_weights(bert_dir, tmp_path, bert):
    from conftest import TEXTS
    from slimbench.checkpoint import Checkpoint
    from slimbench.kernels.patch import apply_kernels as reapply
    from slimbench.pipeline import optimize
    from slimbench.recipes import parse_recipe

    recipe = parse_recipe({"name": "k", "steps": [{"kernels": {"weight_only": "int8", "group_size": 32}}]})
    variant = optimize(Checkpoint.open(bert_dir), recipe, tmp_path, sample_texts=TEXTS, log=lambda *_: None)
    _, enc = bert
    with torch.inference_mode():
        want = variant.model(**enc).logits
    from transformers import AutoModelForSequenceClassification

    reloaded = AutoModelForSequenceClassification.from_pretrained(variant.path).eval()
    reapply(reloaded, weight_only="int8", group_size=32)  # what a deployment does
    with torch.inference_mode():
        torch.testing.assert_close(reloaded(**enc).logits, want, atol=1e-4, rtol=1e-3)
