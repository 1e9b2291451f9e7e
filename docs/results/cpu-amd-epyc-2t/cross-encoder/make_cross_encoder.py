"""A cross-encoder to measure slimbench on: all-MiniLM-L6-v2 with a one-score head (num_labels 1), fine-tuned to
score whether an article (sentence2) is on the topic of another article's opening words (sentence1), on the BBC
News split of the embedded defaults: 3000 training pairs from its training articles, 400 eval pairs from its
held-out ones, half of each on the same topic (label 1.0), half not (0.0).
    python make_cross_encoder.py OUT   ->  OUT/model (the checkpoint), OUT/train.jsonl, OUT/eval.jsonl"""

import json
import random
import sys
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertForSequenceClassification

from slimbench.core.data import LabelledText, read_labelled
from slimbench.defaults import default_sentence_encoder
from slimbench.optimize.training import TrainPlan, train_classifier

QUERY_WORDS = 24


def pairs(path: Path, n: int, seed: int) -> list[dict]:
    """n pairs of the articles of `path` (text, label), half with both on one topic."""
    articles = [json.loads(line) for line in path.read_text().splitlines()]
    by_topic: dict = {}
    for a in articles:
        by_topic.setdefault(a["label"], []).append(a["text"])
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        query = rng.choice(articles)
        same = i % 2 == 0
        topic = query["label"] if same else rng.choice([t for t in by_topic if t != query["label"]])
        other = rng.choice([t for t in by_topic[topic] if t != query["text"]])
        rows.append(
            {
                "sentence1": " ".join(query["text"].split()[:QUERY_WORDS]),
                "sentence2": other,
                "label": 1.0 if same else 0.0,
            }
        )
    return rows


def main(out: Path) -> None:
    source = default_sentence_encoder(log=print).path  # all-MiniLM-L6-v2 and the BBC News split
    out.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train", 3000, 0), ("eval", 400, 1)):
        rows = pairs(source / f"{name}.jsonl", n, seed)
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(source, num_labels=1)
    tokenizer = AutoTokenizer.from_pretrained(source)
    train = read_labelled(out / "train.jsonl", None, "regression")
    seconds = train_classifier(
        model, tokenizer, LabelledText(train.texts, train.labels), TrainPlan(epochs=2, lr=8e-5)
    )
    print(f"fine-tuned in {seconds:.0f} s")
    model.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
