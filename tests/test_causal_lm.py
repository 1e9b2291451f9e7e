"""Causal LMs: packing and perplexity, the decoder default's build, decoder recipes on a tiny Llama,
their artifacts loading without slimbench, and the bench's perplexity and tokens/s records."""

import json

import numpy as np
import pytest
import torch

from conftest import TEXTS, deploy_without_slimbench, deployed
from slimbench import SlimbenchError
from slimbench.core.checkpoint import Checkpoint
from slimbench.core.data import LabelledText
from slimbench.optimize.recipes import load_recipe
from slimbench.pipeline import optimize
from slimbench.tasks.base import NEW_TOKENS
from slimbench.tasks.causal_lm import pack, perplexity, token_nll

DECODER_RECIPES = ("baseline", "onnx", "onnx-o2-int8", "torchao-int8wo", "bnb-int8", "bnb-nf4",
                   "sparse-2of4", "magnitude-50", "bf16-static-cache")  # fmt: skip


class Tok:
    bos_token_id, eos_token_id = 1, 2

    def __call__(self, texts, add_special_tokens=False, verbose=False):
        return {"input_ids": [[10 + len(w) for w in t.split()] for t in texts]}


def test_pack_wraps_documents_in_bos_eos_and_drops_the_remainder():
    blocks = pack(Tok(), ["a bb ccc", "dddd"], block=3)
    # stream: 1 11 12 13 2 1 14 2 -> two full blocks of 3, remainder [2, ...] dropped
    assert blocks.tolist() == [[1, 11, 12], [13, 2, 1]]
    assert blocks.dtype == np.int64


def test_token_nll_matches_torch_cross_entropy():
    rng = np.random.default_rng(0)
    logits, ids = rng.normal(size=(2, 5, 7)), rng.integers(0, 7, size=(2, 5))
    nll, pred = token_nll(logits, ids)
    expected = torch.nn.functional.cross_entropy(
        torch.tensor(logits[:, :-1]).reshape(-1, 7), torch.tensor(ids[:, 1:]).reshape(-1), reduction="none"
    )
    np.testing.assert_allclose(nll.reshape(-1), expected.numpy(), rtol=1e-10)
    assert (pred == logits[:, :-1].argmax(-1)).all()


def test_perplexity_of_uniform_logits_is_the_vocabulary_size():
    blocks = np.arange(24).reshape(3, 8) % 5
    ppl, predictions = perplexity(lambda ids: torch.zeros(*ids.shape, 5), blocks, batch_size=2)
    assert ppl == pytest.approx(5.0)
    assert len(predictions) == 3 * 7


def test_wordpiece_subset_keeps_minilm_pieces_adds_bos_only(tmp_path):
    from transformers import AutoTokenizer

    from slimbench.defaults import minilm_dir, wordpiece_subset

    wordpiece_subset(TEXTS, 1, tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)  # the standard loader, as a deployment would
    base = AutoTokenizer.from_pretrained(minilm_dir())
    assert len(tok) < 3000 < len(base)
    enc = tok(TEXTS[0])
    assert list(enc) == ["input_ids", "attention_mask"]  # no token_type_ids: generate() refuses them
    assert enc["input_ids"][0] == tok.bos_token_id and enc["input_ids"][-1] != tok.eos_token_id
    assert tok.convert_ids_to_tokens(enc["input_ids"][1:]) == base.tokenize(TEXTS[0])


def test_decoder_default_builds_caches_and_records_perplexity(tmp_path, monkeypatch):
    """The real build on the real corpus, made small: a few steps of a tiny model."""
    from slimbench.defaults import Pretrain, default_decoder

    monkeypatch.setenv("SLIMBENCH_CACHE_DIR", str(tmp_path))
    recipe = Pretrain(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, steps=3, batch_size=4)
    model = default_decoder(recipe, log=lambda *_: None, progress=False)
    assert model.path.name.startswith("llama-bbc-")
    info = model.info
    assert 1 < info["eval_perplexity"] < 2 * info["vocab_size"]
    assert info["eval_size"] == 400 and sum(1 for _ in open(model.eval_path)) == 400
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(model.path)
    assert type(loaded).__name__ == "LlamaForCausalLM"
    assert loaded.config.vocab_size == info["vocab_size"]
    again = default_decoder(recipe, log=lambda *_: pytest.fail("rebuilt"), progress=False)
    assert again.path == model.path
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial build left


@pytest.fixture(scope="module")
def llama_variants(tiny_llama, tmp_path_factory):
    out = tmp_path_factory.mktemp("llama-variants")
    checkpoint = Checkpoint.open(tiny_llama)
    train = LabelledText([" ".join(TEXTS)] * 12)  # text alone, enough for a few blocks of 128
    # random weights: pruning flips near-tied next tokens, so the agreement check only records
    return {
        name: optimize(checkpoint, load_recipe(name), out, sample_texts=TEXTS, train_data=train,
                       allow_degraded=True, log=lambda *_: None)
        for name in DECODER_RECIPES
    }  # fmt: skip


def test_causal_lm_checkpoint_is_detected(tiny_llama):
    assert Checkpoint.open(tiny_llama).task == "causal-lm"


def test_onnx_export_of_a_causal_lm_carries_the_kv_cache(llama_variants):
    import onnx

    for name in ("onnx", "onnx-o2-int8"):
        graph = onnx.load(str(llama_variants[name].path / "model.onnx"), load_external_data=False).graph
        inputs = {i.name for i in graph.input}
        outputs = {o.name for o in graph.output}
        assert {"past_key_values.0.key", "past_key_values.1.value"} <= inputs, name
        assert {"present.0.key", "present.1.value"} <= outputs, name
    manifest = json.loads((llama_variants["onnx"].path / "slimbench.json").read_text())
    assert manifest["notes"]["export_parity_max_abs_logit_diff"] < 1e-3
    assert json.loads((llama_variants["onnx-o2-int8"].path / "slimbench.json").read_text())["dtype"] == "int8"


def test_pruned_decoders_keep_their_pattern_through_recovery(llama_variants):
    from slimbench.optimize.prune import is_two_of_four, prunable_linears

    for name in ("sparse-2of4", "magnitude-50"):
        model = llama_variants[name].model
        linears = prunable_linears(model)
        assert "lm_head" not in linears and len(linears) == 2 * 7
        zeros = sum(int((m.weight == 0).sum()) for m in linears.values())
        total = sum(m.weight.numel() for m in linears.values())
        assert zeros / total >= 0.5, name
        manifest = json.loads((llama_variants[name].path / "slimbench.json").read_text())
        assert manifest["notes"]["recover_steps"] >= 1
    assert all(
        is_two_of_four(m.weight) for m in prunable_linears(llama_variants["sparse-2of4"].model).values()
    )


def test_cli_trains_a_causal_lm_on_the_text_column_alone(tiny_llama, tmp_path, capsys):
    """Training text for a causal LM needs no label column, and one that is there (the BBC files have topic
    labels the LM's config knows nothing of) is not read."""
    from slimbench.cli import main

    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nsteps:\n  - prune: {method: magnitude, sparsity: 0.5}\n"
                      "  - recover: {epochs: 1, max_steps: 2, distill: false}\n")  # fmt: skip
    text = " ".join(TEXTS)
    plain, labelled = tmp_path / "plain.jsonl", tmp_path / "labelled.jsonl"
    plain.write_text("".join(json.dumps({"text": text}) + "\n" for _ in range(12)))
    labelled.write_text("".join(json.dumps({"text": text, "label": 4}) + "\n" for _ in range(12)))
    out = tmp_path / "out"
    common = ["optimize", str(tiny_llama), "--recipe", str(recipe), "--out", str(out), "--allow-degraded"]
    assert main([*common, "--train-data", str(plain)]) == 0
    manifest = json.loads((out / "r" / "slimbench.json").read_text())
    assert manifest["notes"]["recover_steps"] >= 1
    capsys.readouterr()
    assert main([*common, "--train-data", str(labelled)]) == 0  # the same training text: nothing to rebuild
    assert "[r] up to date" in capsys.readouterr().out


def test_dynamic_int8_refuses_a_causal_lm(tiny_llama, tmp_path):
    with pytest.raises(SlimbenchError, match="cannot generate text"):
        optimize(Checkpoint.open(tiny_llama), load_recipe("torch-int8"), tmp_path, sample_texts=TEXTS,
                 log=lambda *_: None)  # fmt: skip


# deploy(path, text, n) -> the n greedy tokens, as a deployment generates (tests/conftest.py: deploy_without_slimbench)
DEPLOY = r"""
import json
from pathlib import Path

def deploy(path, text, n):
    d = Path(path)
    kind = json.loads((d / "slimbench.json").read_text())["kind"]
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(d)
    enc = tok([text], return_tensors="pt")
    if kind == "onnx":
        from optimum.onnxruntime import ORTModelForCausalLM as Model
    else:
        from transformers import AutoModelForCausalLM as Model
    model = Model.from_pretrained(d)
    ids = model.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
    return ids[0, enc["input_ids"].shape[1]:].tolist()
"""
DEPLOYED = [
    "baseline",
    "onnx",
    "onnx-o2-int8",
    "torchao-int8wo",
    "bnb-nf4",
    "sparse-2of4",
    "bf16-static-cache",
]


@pytest.fixture(scope="module")
def deployments(llama_variants, tmp_path_factory):
    cases = {name: [str(llama_variants[name].path), TEXTS[2], 6] for name in DEPLOYED}
    return deploy_without_slimbench(DEPLOY, cases, tmp_path_factory.mktemp("deploy"))


@pytest.mark.parametrize("name", DEPLOYED)
def test_decoder_artifact_generates_without_slimbench(name, deployments, llama_variants, tiny_llama):
    generated = deployed(deployments[name])
    assert len(generated) == 6
    if name in ("onnx", "sparse-2of4"):  # fp32 graphs: the same greedy tokens as in memory
        tok = Checkpoint.open(tiny_llama).load_tokenizer()
        enc = tok([TEXTS[2]], return_tensors="pt")
        with torch.inference_mode():
            ids = llama_variants[name].model.generate(**enc, max_new_tokens=6, min_new_tokens=6, do_sample=False,
                                                      pad_token_id=tok.pad_token_id)  # fmt: skip
        assert generated == ids[0, enc["input_ids"].shape[1] :].tolist()


def test_static_cache_variant_generates_what_the_dynamic_cache_does(llama_variants, tiny_llama):
    from transformers import AutoModelForCausalLM, StaticCache

    path = llama_variants["bf16-static-cache"].path
    model = AutoModelForCausalLM.from_pretrained(path, dtype="auto").eval()  # what a deployment loads
    assert model.dtype == torch.bfloat16 and model.generation_config.cache_implementation == "static"
    assert not model.generation_config.disable_compile  # transformers compiles its decode step on a GPU
    tok = Checkpoint.open(tiny_llama).load_tokenizer()
    tok.padding_side = "left"
    enc = tok([TEXTS[0], TEXTS[3] + " " + TEXTS[4]], return_tensors="pt", padding=True)  # two lengths
    with torch.inference_mode():
        static = model.generate(**enc, max_new_tokens=8, min_new_tokens=8, do_sample=False,
                                pad_token_id=tok.pad_token_id, return_dict_in_generate=True)  # fmt: skip
        dynamic = model.generate(**enc, max_new_tokens=8, min_new_tokens=8, do_sample=False,
                                 pad_token_id=tok.pad_token_id, cache_implementation="dynamic")  # fmt: skip
    assert isinstance(static.past_key_values, StaticCache)
    assert static.sequences.tolist() == dynamic.tolist()


def test_a_static_cache_decode_step_without_cuda_graphs_is_counted(llama_variants, tiny_llama):
    """On a GPU transformers compiles the static-cache variant's decode step (mode "reduce-overhead"); where
    torch.compile runs it without CUDA graphs, the bench's cell must say so. Compiled on the CPU
    (transformers' compile-everywhere flag), the decode step never has graphs: the cell's watch counts the
    skip and no graph."""
    from transformers import AutoModelForCausalLM, CompileConfig

    from slimbench.backends.base import greedy_generate
    from slimbench.backends.cudagraphs import GraphWatch

    model = AutoModelForCausalLM.from_pretrained(
        llama_variants["bf16-static-cache"].path, dtype="auto"
    ).eval()
    compile_config = CompileConfig()
    compile_config._compile_all_devices = True  # transformers compiles the decode step on CUDA only otherwise
    model.generation_config.compile_config = compile_config
    tok = Checkpoint.open(tiny_llama).load_tokenizer()
    tok.padding_side = "left"
    torch._dynamo.reset()
    watch = GraphWatch(0).start()
    greedy_generate(model, tok)(dict(tok(TEXTS[:2], return_tensors="pt", padding=True)), 4)
    facts = watch.facts()
    assert hasattr(model, "_compiled_call")  # the decode step went through torch.compile
    assert facts["cuda_graphs"] == 0 and facts["cuda_graph_skips"] >= 1


def test_bench_records_perplexity_and_generated_tokens_per_second(llama_variants, tmp_path):
    from slimbench.bench import run_bench
    from slimbench.bench.timing import TimingPlan

    eval_path = tmp_path / "eval.jsonl"
    eval_path.write_text("".join(json.dumps({"text": " ".join(TEXTS) * 3}) + "\n" for _ in range(4)))
    dirs = [llama_variants[n].path for n in ("baseline", "onnx", "onnx-o2-int8")]
    results = tmp_path / "results.jsonl"
    # an encoder's record with the same variant name and workload must not count as done here
    results.write_text(json.dumps({"task": "text-classification", "variant": "baseline", "device": "cpu",
                                   "batch_size": 2, "seq_len": 16}) + "\n")  # fmt: skip
    records, failures = run_bench(
        dirs, eval_path, [2], [16], results, plan=TimingPlan(warmup=1, min_reps=2, min_seconds=0),
        eval_seq_len=32, progress=False, log=lambda *_: None,
    )  # fmt: skip
    assert failures == []
    by = {r["variant"]: r for r in records}
    assert set(by) == {"baseline", "onnx", "onnx-o2-int8"}
    for r in records:
        assert r["task"] == "causal-lm" and r["metric_name"] == "perplexity"
        assert r["throughput_items_per_s"] == pytest.approx(2 * NEW_TOKENS / (r["latency_ms_mean"] / 1e3))
        # the first token alone is quicker than all 32; the others share the rest
        assert 0 < r["ttft_ms_p50"] < r["latency_ms_p50"]
        assert r["tpot_ms_p50"] == pytest.approx((r["latency_ms_p50"] - r["ttft_ms_p50"]) / (NEW_TOKENS - 1))
    assert by["baseline"]["agreement_with_baseline"] == 1.0
    assert by["onnx"]["metric_ratio_to_baseline"] == pytest.approx(1.0, abs=1e-4)  # fp32 ONNX: same model
    assert by["onnx"]["agreement_with_baseline"] > 0.99


def test_report_budget_for_perplexity_is_at_most_one_percent_more():
    import pandas as pd

    from slimbench.reports.report import summary_table

    def rec(variant, recipe, ratio, metric_name):
        return {"task": "causal-lm", "variant": variant, "recipe": recipe, "device": "cpu", "device_name": "x", "num_threads": 2,
                "batch_size": 1, "seq_len": 128, "latency_ms_p50": 10.0, "metric_name": metric_name,
                "metric_ratio_to_baseline": ratio}  # fmt: skip

    t = summary_table(pd.DataFrame([
        rec("baseline", "baseline", 1.0, "perplexity"), rec("a", "x", 1.009, "perplexity"),
        rec("b", "x", 1.02, "perplexity"), rec("c", "x", 0.95, "perplexity"),
    ]))  # fmt: skip
    assert dict(zip(t["variant"], t["within_budget"], strict=True)) == {
        "baseline": True, "a": True, "b": False, "c": True,
    }  # fmt: skip


def test_last_position_prefill_matches_the_full_one(llama_variants, tiny_llama, tmp_path):
    """The exported prefill projects only the last position (what generate() reads); fed
    logits_to_keep = 0 it gives every position. Against a graph exported with every position: the same
    next token through the standard loader, the same logits at every position, the same perplexity."""
    import onnxruntime as ort
    from optimum.onnxruntime import ORTModelForCausalLM

    from slimbench.backends import load
    from slimbench.backends.ort import full_logits
    from slimbench.optimize.recipes import parse_recipe
    from slimbench.tasks import get_task

    full = optimize(Checkpoint.open(tiny_llama), parse_recipe({"name": "onnx-full", "steps": [
        {"export": {"logits_to_keep": 0}}]}), tmp_path, sample_texts=TEXTS, log=lambda *_: None)  # fmt: skip
    last = llama_variants["onnx"]
    overridable = {
        name: {
            i.name for i in ort.InferenceSession(str(v.path / "model.onnx")).get_overridable_initializers()
        }
        for name, v in (("last", last), ("full", full))
    }
    assert "logits_to_keep" in overridable["last"] and "logits_to_keep" not in overridable["full"]
    tok = Checkpoint.open(tiny_llama).load_tokenizer()
    tok.padding_side = "left"
    enc = tok(TEXTS[:3], return_tensors="pt", padding=True)
    plain = {n: ORTModelForCausalLM.from_pretrained(v.path) for n, v in (("last", last), ("full", full))}
    assert plain["last"](**enc).logits.shape[1] == 1  # the standard loader: the last position only
    assert plain["full"](**enc).logits.shape[1] == enc["input_ids"].shape[1]
    assert torch.equal(
        plain["last"](**enc).logits[:, -1].argmax(-1), plain["full"](**enc).logits[:, -1].argmax(-1)
    )
    torch.testing.assert_close(
        full_logits(plain["last"], enc), plain["full"](**enc).logits, rtol=0, atol=1e-5
    )
    eval_path = tmp_path / "eval.jsonl"
    eval_path.write_text("".join(json.dumps({"text": " ".join(TEXTS) * 3}) + "\n" for _ in range(4)))
    task = get_task("causal-lm")
    scores = [task.score(load(v.path), eval_path, 32)["metric"] for v in (last, full)]
    assert scores[0] == pytest.approx(scores[1], rel=1e-6)
