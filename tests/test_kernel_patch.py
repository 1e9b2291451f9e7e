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


def tiny_gpt2(**kw):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=64, vocab_size=120, n_positions=64, attn_implementation="sdpa",
                        **kw)  # fmt: skip
    return GPT2LMHeadModel(config).eval()


@pytest.mark.parametrize("options", [dict(), dict(weight_only="int8", group_size=32)])
def test_patched_gpt2_matches_unpatched_with_left_padding(options):
    model = tiny_gpt2()
    ids = torch.randint(0, 120, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, :3] = 0
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        want = model(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits
    replaced = apply_kernels(model, **options)
    kinds = {r.split(": ")[1] for r in replaced}
    assert {"LayerNorm", "bias+GELU", "flash attention (AttentionInterface)"} <= kinds
    if options:
        assert (
            sum(k == "W8A16" for k in (r.split(": ")[1] for r in replaced)) == 2 * 4
        )  # c_attn, c_proj, c_fc, c_proj
    with torch.inference_mode():
        got = model(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits
    atol = 2e-2 if options else 1e-4
    torch.testing.assert_close(got[0], want[0], atol=atol, rtol=1e-3)
    torch.testing.assert_close(got[1, 3:], want[1, 3:], atol=atol, rtol=1e-3)


def test_patched_gpt2_generates_the_same_tokens_with_kv_cache():
    model = tiny_gpt2()
    ids = torch.randint(0, 120, (1, 5))
    with torch.inference_mode():
        want = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
        apply_kernels(model)
        got = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert got.tolist() == want.tolist()


def test_unsupported_models_and_options_are_refused():
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    neo = GPTNeoForCausalLM(GPTNeoConfig(num_layers=1, num_heads=2, hidden_size=16, vocab_size=50,
                                         attention_types=[[["global"], 1]]))  # fmt: skip
    with pytest.raises(ValueError, match="BERT-family, Llama-family and GPT-2"):
        apply_kernels(neo)
    with pytest.raises(ValueError, match="weight_only must be"):
        apply_kernels(tiny_llama(), weight_only="int3")
    with pytest.raises(ValueError, match="cross-attention"):
        apply_kernels(tiny_gpt2(add_cross_attention=True))


def test_attention_with_unsupported_head_dim_stays_on_pytorch(tiny_bert):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert)  # head dim 8
    assert not any("flash attention" in r for r in apply_kernels(model))


def test_kernels_step_saves_loadable_weights(bert_dir, tmp_path, bert):
    from conftest import TEXTS
    from slimbench.core.checkpoint import Checkpoint
    from slimbench.kernels.patch import apply_kernels as reapply
    from slimbench.optimize.recipes import parse_recipe
    from slimbench.pipeline import optimize

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
    from slimbench.core.manifest import read_manifest

    notes = read_manifest(variant.path)["notes"]
    # as recorded
    reapply(AutoModelForSequenceClassification.from_pretrained(variant.path), **notes["kernels"])
    assert notes["cuda_graphs"] is True and "cuda_graphs" not in notes["kernels"]


def test_the_graph_replayed_model_is_traced_whole_and_gives_the_eager_logits(bert_dir, bert):
    """On a GPU the kernels' loader replays the patched model as CUDA graphs through torch.compile's
    cudagraphs backend; tracing it must take the whole model (fullgraph: no break at a kernel or a
    mask check). On the CPU the backend runs the traced graph without graphs (require_graphs=False):
    same logits."""
    from transformers import AutoModelForSequenceClassification

    from slimbench.backends.triton_kernels import graph_replayed
    from slimbench.kernels.patch import apply_kernels

    model = AutoModelForSequenceClassification.from_pretrained(bert_dir).eval()
    apply_kernels(model, weight_only="int8", group_size=32)
    _, enc = bert
    torch._dynamo.reset()
    with torch.inference_mode():
        torch.testing.assert_close(
            graph_replayed(model, require_graphs=False)(**enc).logits,
            model(**enc).logits,
            atol=1e-4,
            rtol=1e-4,
        )


def test_a_model_that_cannot_be_captured_is_refused_not_measured_without_graphs(bert_dir, bert):
    """What the loader does where the cudagraphs backend cannot capture the patched model: on the CPU it
    never can ("cpu device"), so the same check that guards a GPU run refuses here, in one line."""
    from transformers import AutoModelForSequenceClassification

    from slimbench import SlimbenchError
    from slimbench.backends.triton_kernels import graph_replayed
    from slimbench.kernels.patch import apply_kernels

    model = AutoModelForSequenceClassification.from_pretrained(bert_dir).eval()
    apply_kernels(model)
    _, enc = bert
    torch._dynamo.reset()
    with (
        torch.inference_mode(),
        pytest.raises(SlimbenchError, match=r"cannot be captured as a CUDA graph \(cpu device"),
    ):
        graph_replayed(model)(**enc)
