"""An extractive question-answering model to measure slimbench on: all-MiniLM-L6-v2 with a SQuAD-style head
(a start and an end logit per token), fine-tuned on cloze questions about BBC News articles (the embedded
defaults' split): the context is an article's opening (up to CONTEXT_WORDS words); the question is one of its
sentences with a name or a number taken out and replaced by "what"; the answer is what was taken out, a span of
the context. 3000 training questions from the training articles, 400 eval questions from the held-out ones,
in SQuAD's format (`answers`: `text` and `answer_start`).
    python make_qa_model.py OUT   ->  OUT/model (the checkpoint), OUT/train.jsonl, OUT/eval.jsonl"""

import json
import random
import re
import sys
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertForQuestionAnswering

from slimbench.defaults import default_sentence_encoder
from slimbench.optimize.training import TrainPlan, train_classifier
from slimbench.tasks import get_task

CONTEXT_WORDS = 120
# a run of capitalised words (a name) or a number, not at the start of its sentence
ANSWER = re.compile(r"(?<=\s)(?:[A-Z][a-z]+(?:\s+[A-Z][a-z]+)*|[£$]?\d[\d,.]*(?:\s?(?:m|bn|%))?)(?=[\s,.;:])")


def questions(path: Path, n: int, seed: int) -> list[dict]:
    """Up to n cloze questions, one per article of `path`, cycling through the articles."""
    articles = [json.loads(line)["text"] for line in path.read_text().splitlines()]
    rng = random.Random(seed)
    rng.shuffle(articles)
    rows = []
    for text in articles * 3:
        context = " ".join(text.split()[:CONTEXT_WORDS])
        sentences = [(m.start(), m.group()) for m in re.finditer(r"[^.!?\s][^.!?]*[.!?]", context)]
        rng.shuffle(sentences)
        for offset, sentence in sentences:
            found = [m for m in ANSWER.finditer(sentence) if len(m.group()) > 1]
            if len(sentence.split()) < 8 or not found:
                continue
            m = rng.choice(found)
            question = (sentence[: m.start()] + "what" + sentence[m.end() :]).strip().rstrip(".!") + "?"
            start = offset + m.start()
            assert context[start : start + len(m.group())] == m.group()
            rows.append({"question": question, "context": context,
                         "answers": {"text": [m.group()], "answer_start": [start]}})  # fmt: skip
            break
        if len(rows) >= n:
            break
    return rows


def main(out: Path) -> None:
    source = default_sentence_encoder(log=print).path  # all-MiniLM-L6-v2 and the BBC News split
    out.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train", 3000, 0), ("eval", 400, 1)):
        rows = questions(source / f"{name}.jsonl", n, seed)
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"{name}: {len(rows)} questions")
    torch.manual_seed(0)
    model = BertForQuestionAnswering.from_pretrained(source)
    tokenizer = AutoTokenizer.from_pretrained(source)
    train = get_task("question-answering").read_train(out / "train.jsonl", model.config)
    seconds = train_classifier(model, tokenizer, train, TrainPlan(epochs=2, lr=1e-4, max_len=192))
    print(f"fine-tuned in {seconds:.0f} s")
    model.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
