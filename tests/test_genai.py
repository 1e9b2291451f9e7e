"""ONNX Runtime GenAI variants of a causal LM (the `genai` step): the built graph against PyTorch at
every position, the builder's last-position prefill against the full graph, greedy tokens against
transformers' generate() (padded batches included), int8 perplexity, and the artifact generating
with onnxruntime-genai alone."""

import json

import numpy as np
import pytest
import torch

from conftest import TEXTS, deploy_without_slimbench, deployed
from slimbench import SlimbenchError
from slimbench.backends import load
from slimbench.core.checkpoint import Checkpoint
from slimbench.core.manifest import read_manifest
from slimbench.optimize.recipes import load_recipe, parse_recipe
from slimbench.pipeline import optimize

og = pytest.importorskip(
    "onnxruntime_genai", reason="onnxruntime-genai is not installed (a slimbench dependency)"
)


@pytest.fixture(scope="module")
def genai_variants(tiny_llama, tmp_path_factory):
    out = tmp_path_factory.mktemp("genai-variants")
    checkpoint = Checkpoint.open(tiny_llama)
    recipes = {"fp32": parse_recipe({"name": "genai-fp32", "steps": [{"genai": {}}]}),
               "int8": load_recipe("onnx-genai-int8")}  # fmt: skip
    return {
        k: optimize(checkpoint, r, out, sample_texts=TEXTS, log=lambda *_: None) for k, r in recipes.items()
    }


def hf_greedy(tiny_llama, enc: dict, n: int) -> np.ndarray:
    model = Checkpoint.open(tiny_llama).load_model()
    with torch.inference_mode():
        out = model.generate(**{k: torch.from_numpy(v) for k, v in enc.items()}, max_new_tokens=n, min_new_tokens=n,
                             do_sample=False, pad_token_id=0)  # fmt: skip
    return out[:, enc["input_ids"].shape[1] :].numpy()


def test_genai_fp32_graph_matches_pytorch_at_every_position(genai_variants, tiny_llama):
    manifest = read_manifest(genai_variants["fp32"].path)
    assert manifest["kind"] == "onnx-genai" and manifest["loader"] == "onnxruntime_genai.Model"
    assert manifest["notes"]["export_parity_max_abs_logit_diff"] < 1e-4
    assert manifest["agreement_check"]["passed"] and manifest["agreement_check"]["agreement"] == 1.0
    loaded = load(genai_variants["fp32"].path)
    tok = Checkpoint.open(tiny_llama).load_tokenizer()
    tok.padding_side = "right"
    enc = tok(TEXTS[:3], return_tensors="np", padding=True)
    got = loaded.logits(dict(enc))
    with torch.inference_mode():
        expected = (
            Checkpoint.open(tiny_llama)
            .load_model()(**{k: torch.from_numpy(v) for k, v in enc.items()})
            .logits
        )
    real = enc["attention_mask"].astype(bool)
    assert got.shape == tuple(expected.shape)
    np.testing.assert_allclose(got[real], expected.numpy()[real], atol=1e-4)


@pytest.mark.parametrize("which", ["fp32", "int8"])
def test_builder_prefill_projects_the_last_position_only(which, genai_variants, tiny_llama):
    """The graph as built returns one position per row (what generation reads); it is the last
    position of the every-position graph slimbench scores with (int8: the LM head's activations are
    quantized with one scale per tensor, and that tensor is one position or all of them)."""
    import onnx

    path = genai_variants[which].path
    logits = next(o for o in onnx.load(str(path / "model.onnx"), load_external_data=False).graph.output
                  if o.name == "logits")  # fmt: skip
    assert logits.type.tensor_type.shape.dim[1].dim_value == 1
    tok = Checkpoint.open(tiny_llama).load_tokenizer()
    ids = tok([TEXTS[1]], return_tensors="np")["input_ids"]
    model = og.Model(str(path))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=ids.shape[1] + 1)
    generator = og.Generator(model, params)
    generator.append_tokens(ids.astype(np.int32))
    last = np.asarray(generator.get_logits()).reshape(-1)
    full = load(path).logits({"input_ids": ids, "attention_mask": np.ones_like(ids)})
    assert full.shape[1] == ids.shape[1]
    np.testing.assert_allclose(last, full[0, -1], atol=1e-5 if which == "fp32" else 2e-2)


def test_genai_greedy_tokens_match_transformers_padded_batch_included(genai_variants, tiny_llama):
    loaded = load(genai_variants["fp32"].path)
    for seq_len in (8, 16):  # 8: every prompt fills the width; 16: left padding of different lengths
        enc = loaded.encode(TEXTS[:4], seq_len)
        got = loaded.generate(enc, 5)
        assert got.shape == (4, seq_len + 5)
        np.testing.assert_array_equal(got[:, :seq_len], enc["input_ids"])
        np.testing.assert_array_equal(got[:, seq_len:], hf_greedy(tiny_llama, enc, 5))
    assert len(set(enc["attention_mask"].sum(1).tolist())) > 1  # the padded case really was padded


def test_genai_int8_keeps_the_perplexity(genai_variants, tiny_llama, tmp_path):
    from slimbench.tasks import get_task

    manifest = read_manifest(genai_variants["int8"].path)
    assert manifest["dtype"] == "int8" and manifest["notes"]["int8_max_abs_logit_diff"] > 0
    assert manifest["recipe"]["steps"] == [{"genai": {"precision": "fp32", "quantize": "dynamic-int8",
        "per_channel": False, "execution_provider": "cpu", "block_size": 32, "parity_atol": 1e-3}}]  # fmt: skip
    eval_path = tmp_path / "eval.jsonl"
    eval_path.write_text("".join(json.dumps({"text": " ".join(TEXTS) * 3}) + "\n" for _ in range(4)))
    task = get_task("causal-lm")
    fp32 = task.score(load(genai_variants["fp32"].path), eval_path, 32)
    int8 = task.score(load(genai_variants["int8"].path), eval_path, 32)
    baseline = task.score(load(optimize(Checkpoint.open(tiny_llama), load_recipe("baseline"), tmp_path,
                                        sample_texts=TEXTS, log=lambda *_: None).path), eval_path, 32)  # fmt: skip
    assert fp32["metric"] == pytest.approx(baseline["metric"], rel=1e-5)
    assert int8["metric"] == pytest.approx(baseline["metric"], rel=0.01)
    assert int8["metric"] != fp32["metric"]  # it really is another graph


# deploy(path, text, n) -> the n greedy tokens, with onnxruntime-genai alone (tests/conftest.py: deploy_without_slimbench)
DEPLOY = r"""
import numpy as np

def deploy(path, text, n):
    import onnxruntime_genai as og
    from transformers import AutoTokenizer
    ids = AutoTokenizer.from_pretrained(path)([text], return_tensors="np")["input_ids"].astype(np.int32)
    model = og.Model(path)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=ids.shape[1] + n, min_length=ids.shape[1] + n, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    while not generator.is_done():
        generator.generate_next_token()
    return [int(t) for t in generator.get_sequence(0)[ids.shape[1]:]]
"""


@pytest.fixture(scope="module")
def deployments(genai_variants, tmp_path_factory):
    cases = {which: [str(genai_variants[which].path), TEXTS[2], 6] for which in ("fp32", "int8")}
    return deploy_without_slimbench(DEPLOY, cases, tmp_path_factory.mktemp("deploy"))


@pytest.mark.parametrize("which", ["fp32", "int8"])
def test_genai_artifact_generates_with_onnxruntime_genai_alone(which, deployments, tiny_llama):
    generated = deployed(deployments[which])
    assert len(generated) == 6
    if which == "fp32":
        enc = dict(Checkpoint.open(tiny_llama).load_tokenizer()([TEXTS[2]], return_tensors="np"))
        assert generated == hf_greedy(tiny_llama, enc, 6)[0].tolist()


def test_genai_config_and_task_are_checked(tiny_bert, tmp_path):
    from slimbench import RecipeError

    for params, message in (({"precision": "int4", "quantize": "dynamic-int8"}, "precision fp32"),
                            ({"precision": "fp16"}, "needs execution_provider cuda"),
                            ({"precision": "int4", "block_size": 48}, "block_size must be one of")):  # fmt: skip
        with pytest.raises(RecipeError, match=message):
            parse_recipe({"name": "x", "steps": [{"genai": params}]})
    with pytest.raises(
        SlimbenchError, match="step 'genai' applies to causal-lm checkpoints, not text-classification"
    ):
        optimize(Checkpoint.open(tiny_bert), parse_recipe({"name": "g", "steps": [{"genai": {}}]}), tmp_path,
                 sample_texts=TEXTS, log=lambda *_: None)  # fmt: skip


def test_an_architecture_the_builder_does_not_build_is_named(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from slimbench.defaults import wordpiece_subset

    tokenizer = wordpiece_subset(TEXTS, 1, tmp_path / "gpt2")
    config = GPT2Config(n_embd=32, n_layer=1, n_head=2, n_positions=64, vocab_size=len(tokenizer),
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(SlimbenchError, match="onnxruntime-genai's builder does not build GPT2LMHeadModel models; "
                                             "the `onnx` recipe exports"):  # fmt: skip
        optimize(Checkpoint.open(tmp_path / "gpt2"), load_recipe("onnx-genai-int8"), tmp_path / "out",
                 sample_texts=TEXTS, log=lambda *_: None)  # fmt: skip
