"""Sequence-to-sequence models (summarizers, translators): source/target data, ROUGE-L against hand-computed
values, the agreement check along the source model's own output, and a tiny BART trained here (its output: the
source's first three words) optimized (bf16, static cache, ONNX O2 int8 of its three graphs, torchao), deployed
without slimbench and benchmarked; T5 and Marian exported; what cannot apply refused."""

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
from slimbench.optimize.apply import agreement_check, optimize
from slimbench.optimize.recipes import builtin_recipes, load_recipe
from slimbench.tasks import detect_task, get_task
from slimbench.tasks.seq2seq import decoder_mask, rouge_l

TASK = get_task("seq2seq")


def lead(text: str, words: slice = slice(3)) -> str:
    return " ".join(text.split()[words])


def rows(n: int, words: slice = slice(3)) -> list[dict]:
    """Each text with its first three words (or other `words`) as the target."""
    return [{"source": TEXTS[i % len(TEXTS)], "target": lead(TEXTS[i % len(TEXTS)], words)} for i in range(n)]


def seq2seq_tokenizer(path: Path):
    """The MiniLM vocabulary cut to the test texts, each input [CLS] ... [SEP] (BART's <s> ... </s>)."""
    from tokenizers.processors import TemplateProcessing

    from slimbench.defaults import wordpiece_subset

    tokenizer = wordpiece_subset(TEXTS, 1, path)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", bos), ("[SEP]", eos)]
    )
    tokenizer.save_pretrained(path)
    return tokenizer


def make_bart(path: Path, words: slice = slice(3), steps: int = 300) -> Path:
    """A tiny BART trained to write each test text's first three words (or other `words`)."""
    from transformers import BartConfig, BartForConditionalGeneration

    torch.manual_seed(0)
    tokenizer = seq2seq_tokenizer(path)
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    model = BartForConditionalGeneration(BartConfig(
        vocab_size=len(tokenizer), d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128,
        bos_token_id=bos, eos_token_id=eos, pad_token_id=pad, decoder_start_token_id=eos,
    ))  # fmt: skip
    data = rows(len(TEXTS), words)
    enc = tokenizer([r["source"] for r in data], padding=True, return_tensors="pt")
    labels = tokenizer([r["target"] for r in data], padding=True, return_tensors="pt")["input_ids"]
    labels[labels == pad] = -100
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        model(**enc, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def s2s_file(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("s2s") / "s2s.jsonl", rows(16))


@pytest.fixture(scope="module")
def s2s_model(tmp_path_factory) -> Path:
    return make_bart(tmp_path_factory.mktemp("s2s") / "bart")


def baseline_of(model: Path) -> Path:
    return optimize(Checkpoint.open(model), builtin_recipes()["baseline"], model.parent / "variants",
                    sample_texts=TEXTS, progress=False, log=lambda *a: None).path  # fmt: skip


def test_the_task_is_told_by_the_architecture_and_the_config():
    for architecture in ("BartForConditionalGeneration", "T5ForConditionalGeneration", "MarianMTModel",
                         "EncoderDecoderModel"):  # fmt: skip
        assert detect_task([architecture], encoder_decoder=True) == "seq2seq"
    # a vision-language decoder's name ends the same way; its config is no encoder-decoder's
    assert detect_task(["LlavaForConditionalGeneration"], encoder_decoder=False) is None
    assert detect_task(["MarianMTModel"], encoder_decoder=False) == "feature-extraction"  # as it ever was


def test_sources_and_targets_are_read_and_bad_rows_refused(tmp_path):
    jsonl = write_jsonl(tmp_path / "d.jsonl", rows(3))
    (tmp_path / "d.csv").write_text('source,target\n"Oil prices fell sharply.",Oil prices fell\n')
    assert TASK.read(jsonl) == (
        [TEXTS[0], TEXTS[1], TEXTS[2]],
        [lead(TEXTS[0]), lead(TEXTS[1]), lead(TEXTS[2])],
    )
    assert TASK.read(tmp_path / "d.csv") == (["Oil prices fell sharply."], ["Oil prices fell"])
    bad = write_jsonl(tmp_path / "bad.jsonl", [rows(1)[0], {"source": " ", "target": "x"}])
    with pytest.raises(SlimbenchError, match="row 2: 'source' must be a non-empty text"):
        TASK.check_data(bad, None)
    with pytest.raises(SlimbenchError, match=r"lacks column\(s\) \['target'\]"):
        TASK.check_data(write_jsonl(tmp_path / "t.jsonl", [{"source": "a"}]), None)


def test_rouge_l_on_hand_computed_values():
    # the longest common subsequence: 3 words of 3 (precision 1) and of 6 (recall 1/2): F1 2/3
    assert rouge_l(["the cat sat"], ["the cat sat on the mat"]) == pytest.approx([2 / 3])
    assert rouge_l(["mat the on"], ["the cat sat on the mat"]) == pytest.approx(
        [2 * (2 / 3 * 2 / 6) / (2 / 3 + 2 / 6)]
    )
    assert rouge_l(["dogs bark"], ["the cat sat"]) == [0.0]
    # words of any script, case and punctuation aside (rouge-score's own tokenizer keeps a-z and 0-9 only)
    assert rouge_l(["Привет, мир!"], ["привет мир"]) == [1.0]


def test_the_decoder_mask_ends_at_each_rows_first_end_token():
    ids = np.array([[2, 5, 6, 2, 1, 1], [2, 7, 8, 9, 4, 3], [2, 2, 1, 1, 1, 1]])  # start token 2 = end token
    assert decoder_mask(ids, 2).tolist() == [
        [True, True, True, True, False, False],
        [True] * 6,
        [True, True, False, False, False, False],
    ]
    assert decoder_mask(torch.as_tensor(ids), [2, 9])[1].tolist() == [True, True, True, True, False, False]


def test_the_trained_model_writes_its_targets(s2s_model, s2s_file):
    loaded = load(baseline_of(s2s_model))
    score = TASK.score(loaded, s2s_file, 32)
    assert score["metric_name"] == "rougeL"
    assert score["metric"] == 1.0, score["predictions"][:4]
    assert score["predictions"][:2] == [lead(TEXTS[0]).lower(), lead(TEXTS[1]).lower()]
    workload, items = TASK.workload(loaded, TEXTS, 2, 16)
    assert items == 2 * 32 and workload(0).shape == (2, 1 + 32)  # the start token, then exactly 32 tokens


def test_a_model_writing_other_words_fails_the_agreement_check(s2s_model, tmp_path):
    other = make_bart(tmp_path / "last-words", words=slice(-3, None))
    checkpoint = Checkpoint.open(s2s_model)
    assert checkpoint.task == "seq2seq"
    assert agreement_check(checkpoint, baseline_of(other), TEXTS)["agreement"] < 0.5
    check = agreement_check(checkpoint, baseline_of(s2s_model), TEXTS)
    assert check["agreement"] == 1.0 and check["max_abs_logit_diff"] == 0.0


S2S_RECIPES = ["onnx-o2-int8", "bf16", "bf16-static-cache", "torchao-int8wo"]


@pytest.fixture(scope="module")
def s2s_variants(s2s_model, s2s_file):
    return built_variants(
        s2s_model, S2S_RECIPES, s2s_model.parent / "s2s-variants", TASK.latency_texts(s2s_file)
    )


@pytest.mark.parametrize("name", S2S_RECIPES)
def test_variants_keep_the_outputs(s2s_variants, s2s_file, name):
    check = json.loads((s2s_variants[name].path / "slimbench.json").read_text())["agreement_check"]
    assert check["passed"] and check["agreement"] >= 0.9, check
    assert TASK.score(load(s2s_variants[name].path), s2s_file, 32)["metric"] >= 0.9


def test_onnx_int8_quantizes_each_of_the_three_graphs(s2s_variants):
    import onnx

    path = s2s_variants["onnx-o2-int8"].path
    graphs = sorted(p.name for p in path.glob("*.onnx"))
    assert graphs == sorted(TASK.onnx_files)
    for name in graphs:
        ops = {node.op_type for node in onnx.load(str(path / name)).graph.node}
        assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops, (name, sorted(ops))


DEPLOY_S2S = """
from pathlib import Path
from transformers import AutoTokenizer

def deploy(path, text, through_pipeline=False):
    d = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(d)
    if any(d.glob("*.onnx")):
        from optimum.onnxruntime import ORTModelForSeq2SeqLM

        model = ORTModelForSeq2SeqLM.from_pretrained(d)
    else:
        import torch
        from transformers import AutoModelForSeq2SeqLM

        model = AutoModelForSeq2SeqLM.from_pretrained(d, dtype="auto")
        assert model.dtype == torch.bfloat16, model.dtype
    if through_pipeline:
        from transformers import pipeline

        return pipeline("text2text-generation", model=model, tokenizer=tokenizer)(text)[0]["generated_text"]
    ids = model.generate(**tokenizer(text, return_tensors="pt"), max_new_tokens=8)
    return tokenizer.decode(ids[0], skip_special_tokens=True)
"""


def test_variants_deploy_without_slimbench(s2s_variants, tmp_path):
    cases = {
        name: [str(s2s_variants[name].path), TEXTS[2]]
        for name in ("onnx-o2-int8", "bf16", "bf16-static-cache")
    }
    cases["pipeline"] = [str(s2s_variants["onnx-o2-int8"].path), TEXTS[2], True]
    out = deploy_without_slimbench(DEPLOY_S2S, cases, tmp_path)
    assert {name: deployed(result) for name, result in out.items()} == dict.fromkeys(out, "the minister said")


def test_bench_records_rouge_and_generation_times(s2s_model, s2s_variants, s2s_file, tmp_path):
    variants = [baseline_of(s2s_model), s2s_variants["onnx-o2-int8"].path]
    records = bench_records(variants, s2s_file, 2, 16, tmp_path / "r.jsonl")
    assert [r["metric_name"] for r in records] == ["rougeL"] * 2
    assert all(r["status"] == "ok" and r["metric"] >= 0.9 and 0 < r["ttft_ms_p50"] < r["latency_ms_p50"]
               for r in records)  # fmt: skip
    assert records[1]["agreement_with_baseline"] >= 0.9


def random_model(path: Path, model_type: str) -> Path:
    """A tiny randomly initialised seq2seq model of `model_type` with the test tokenizer."""
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    torch.manual_seed(0)
    tokenizer = seq2seq_tokenizer(path)
    ids = {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id,
           "decoder_start_token_id": tokenizer.eos_token_id}  # fmt: skip
    sizes = (
        {"d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_heads": 4}
        if model_type == "t5"
        else {"d_model": 32, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
              "decoder_attention_heads": 4, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "max_position_embeddings": 128}
    )  # fmt: skip
    model = AutoModelForSeq2SeqLM.from_config(AutoConfig.for_model(model_type, vocab_size=len(tokenizer), **ids,
                                                                   **sizes))  # fmt: skip
    model.generation_config.update(**ids)
    model.save_pretrained(path)
    return path


@pytest.mark.parametrize("model_type", ["t5", "marian"])
def test_other_families_export_to_onnx(model_type, tmp_path):
    """T5 (whose export leaves its encoder set to use a cache, so the reference is taken before it) and Marian."""
    model = random_model(tmp_path / model_type, model_type)
    variant = optimize(Checkpoint.open(model), builtin_recipes()["onnx"], tmp_path / "v", sample_texts=TEXTS,
                       progress=False, log=lambda *a: None)  # fmt: skip
    check = json.loads((variant.path / "slimbench.json").read_text())["agreement_check"]
    assert check["agreement"] == 1.0 and check["max_abs_logit_diff"] < 1e-4, check


@pytest.mark.parametrize(
    "recipe, message",
    [
        ("torch-int8", "saves a TorchScript forward pass, which cannot generate text"),
        ("compiled", "compile exports one forward pass"),
    ],
)
def test_formats_that_cannot_generate_are_refused(s2s_model, tmp_path, recipe, message):
    with pytest.raises(SlimbenchError, match=message):
        optimize(Checkpoint.open(s2s_model), builtin_recipes()[recipe], tmp_path, sample_texts=TEXTS,
                 progress=False, log=lambda *a: None)  # fmt: skip


def test_a_search_whose_every_candidate_is_refused_says_so(s2s_model, s2s_file, tmp_path):
    from slimbench.pipeline import run

    with pytest.raises(SlimbenchError, match="every candidate was refused for this checkpoint"):
        run(Checkpoint.open(s2s_model), load_recipe("fastest-within-1pct"), tmp_path, sample_texts=TEXTS,
            train_data=TASK.read_train(s2s_file, None), eval_path=s2s_file, log=lambda *a: None)  # fmt: skip


def test_recovery_brings_back_what_pruning_took(s2s_model, s2s_file, tmp_path):
    """Magnitude pruning of 90% of the weights, then recovery on the source/target pairs (teacher forcing,
    distilled from the unpruned model): the pruned BART writes its targets again, its zeros kept."""
    from slimbench.optimize.recipes import parse_recipe

    prune = {"prune": {"method": "magnitude", "sparsity": 0.9, "scope": "global"}}
    recover = {"recover": {"epochs": 25, "lr": 2e-3, "batch_size": 8, "max_len": 32}}
    checkpoint, train = Checkpoint.open(s2s_model), TASK.read_train(s2s_file, None)
    assert train.labels == [lead(t) for t in train.texts]  # the targets are what recovery trains on
    built = {}
    for name, steps in (("pruned", [prune]), ("recovered", [prune, recover])):
        built[name] = optimize(checkpoint, parse_recipe({"name": name, "steps": steps}, "test"), tmp_path,
                               sample_texts=TEXTS, train_data=train, allow_degraded=True, progress=False,
                               log=lambda *a: None).path  # fmt: skip
    rouge = {name: TASK.score(load(path), s2s_file, 32)["metric"] for name, path in built.items()}
    assert rouge["recovered"] >= 0.9 and rouge["recovered"] > rouge["pruned"] + 0.2, rouge
    notes = json.loads((built["recovered"] / "slimbench.json").read_text())["notes"]
    assert notes["recover_train_token_accuracy_sample"] >= 0.9
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_pretrained(built["recovered"])
    weights = [
        m.weight for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and name != "lm_head"
    ]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros >= 0.85, zeros


def test_targets_are_encoded_as_the_decoder_reads_them(tmp_path):
    """Targets as transformers' seq2seq examples encode them; a first token the decoder is started from (a BERT
    tokenizer's [CLS], for a decoder that starts from [CLS]) is given to the model, not predicted by it."""
    from slimbench.core.data import NO_TARGET, LabelledText
    from slimbench.optimize.training import encode_seq2seq

    tokenizer = seq2seq_tokenizer(tmp_path)
    data = LabelledText(TEXTS[:2], [lead(TEXTS[0]), lead(TEXTS[1], slice(1))])
    _, kept = encode_seq2seq(tokenizer, data, 32, decoder_start=tokenizer.eos_token_id)  # BART's: from </s>
    _, dropped = encode_seq2seq(tokenizer, data, 32, decoder_start=tokenizer.bos_token_id)
    assert kept[:, 0].tolist() == [tokenizer.bos_token_id] * 2 and torch.equal(dropped, kept[:, 1:])
    assert dropped.is_contiguous()  # the model's loss views the labels flat
    assert kept[1, -1] == NO_TARGET and tokenizer.decode(dropped[0][dropped[0] != NO_TARGET]) == (
        f"{lead(TEXTS[0]).lower()} [SEP]"
    )
