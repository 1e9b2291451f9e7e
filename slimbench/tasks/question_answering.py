"""Extractive question answering (SQuAD-style heads: a start and an end logit per token): JSONL or CSV rows
with `question`, `context` and `answers` (SQuAD's `{"text": [...], "answer_start": [...]}`, a list of answer
texts, or one text; none: the question has no answer in the context, as in SQuAD 2.0). A context longer than
the sequence is read in overlapping windows, as transformers' question-answering examples read it; the answer
is the best-scoring span of at most MAX_ANSWER_TOKENS tokens inside the context, scored by SQuAD's F1 (the
best over the gold answers, averaged); agreement is the share of answer spans kept."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slimbench import SlimbenchError
from slimbench.core.data import LabelledText, check_question_room, check_seq_len
from slimbench.tasks.base import Task

COLUMNS = ("question", "context", "answers")
MAX_ANSWER_TOKENS = 30  # the longest answer span considered, in tokens (transformers' max_answer_length)
DEFAULT_QUESTION = "What is this about?"  # asked of each sample text where no sample data is given
STRIDE_SHARE = 4  # consecutive windows of a long context overlap by a quarter of the sequence


@dataclass(frozen=True)
class Example:
    question: str
    context: str
    answers: tuple[str, ...]  # empty: no answer in the context
    starts: tuple[
        int, ...
    ] = ()  # where each answer begins in the context (SQuAD's answer_start), where given


def _answers(path: Path, row: int, raw) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """One row's answer texts, and where they begin where SQuAD's dict (`text`, `answer_start`) says; or a list
    of texts, or one text (JSON text in a CSV cell is read as JSON)."""
    if isinstance(raw, str) and raw.strip()[:1] in ("{", "["):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            pass
    starts = ()
    if isinstance(raw, dict):
        given = raw.get("answer_start")
        starts = tuple(int(x) for x in given) if isinstance(given, (list, tuple)) else ()
        raw = raw.get("text")
    if raw is None or (isinstance(raw, float) and raw != raw):  # absent, or an empty CSV cell
        return (), ()
    if isinstance(raw, str):
        return (raw,), starts[:1]
    if isinstance(raw, (list, tuple)) and all(isinstance(a, str) for a in raw):
        return tuple(raw), starts if len(starts) == len(raw) else ()
    raise SlimbenchError(
        f"data file {str(path)!r} row {row}: answers {raw!r} are neither SQuAD's {{'text': [...], "
        "'answer_start': [...]}, a list of texts nor one text"
    )


def best_spans(logits: np.ndarray, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of `logits` [n, 2, tokens] (start and end logits), the span (start <= end, at most
    MAX_ANSWER_TOKENS long, both ends where `allowed` [n, tokens]) with the highest start + end logit:
    (starts, ends, scores); score -inf where no position is allowed."""
    n, _, length = logits.shape
    band = np.triu(np.ones((length, length), dtype=bool)) & ~np.triu(np.ones((length, length), dtype=bool),
                                                                      MAX_ANSWER_TOKENS)  # fmt: skip
    start = np.where(allowed, logits[:, 0], -np.inf)
    end = np.where(allowed, logits[:, 1], -np.inf)
    pair = np.where(band, start[:, :, None] + end[:, None, :], -np.inf).reshape(n, -1)
    flat = pair.argmax(-1)
    return flat // length, flat % length, pair[np.arange(n), flat]


class QuestionAnswering(Task):
    name = "question-answering"
    auto_class_name = "AutoModelForQuestionAnswering"
    ort_class_name = "ORTModelForQuestionAnswering"
    export_task = "question-answering"
    architecture_suffixes = ("ForQuestionAnswering", "ForQuestionAnsweringSimple")
    metric_name = "squad_f1"
    trainable = True
    agreement_measure = "of the answer spans kept"
    output_name = "start/end logit"

    @staticmethod
    def read(path: Path) -> list[Example]:
        from slimbench.core.data import read_frame

        df = read_frame(path, set(COLUMNS))
        out = []
        for i, row in enumerate(df.itertuples(index=False), start=1):
            question, context = row.question, row.context
            if not isinstance(question, str) or not isinstance(context, str) or not question or not context:
                raise SlimbenchError(f"data file {str(path)!r} row {i}: 'question' and 'context' must be "
                                     "non-empty texts")  # fmt: skip
            out.append(Example(question, context, *_answers(path, i, row.answers)))
        return out

    def check_data(self, path: Path, config) -> int:
        return len(self.read(path))

    def read_train(self, path: Path, config) -> LabelledText:
        """The questions with their contexts, each labelled with its first answer's character span in the context
        (SQuAD's `answer_start`, else where the answer text first occurs there; None: no answer): what recovery
        trains on and accuracy-aware quantization keeps."""
        examples, spans = self.read(path), []
        for row, e in enumerate(examples, start=1):
            spans.append(None if not e.answers else self._span(path, row, e))
        return LabelledText([(e.question, e.context) for e in examples], spans, spans=True)

    @staticmethod
    def _span(path: Path, row: int, e: Example) -> tuple[int, int]:
        text = e.answers[0]
        start = e.starts[0] if e.starts and e.context[e.starts[0] : e.starts[0] + len(text)] == text else -1
        start = start if start >= 0 else e.context.find(text)
        if start < 0:
            raise SlimbenchError(f"data file {str(path)!r} row {row}: the answer {text[:40]!r} is not in the context "
                                 "(an extractive model answers with a span of it)")  # fmt: skip
        return start, start + len(text)

    def inputs_from_texts(self, texts: list[str]) -> list:
        """Each text as the context of one general question."""
        return [(DEFAULT_QUESTION, text) for text in texts]

    def latency_texts(self, path: Path) -> list:
        return [(e.question, e.context) for e in self.read(path)]

    @staticmethod
    def windows(tokenizer, examples: list[Example], seq_len: int) -> dict:
        """Each example's question with its context in windows of `seq_len` tokens (the last quarter of each
        window begins the next): the model's inputs, each window's example, its positions' character offsets
        in the context, and which positions are in the context."""
        check_seq_len(tokenizer, seq_len, pairs=True)
        inputs: dict[str, list] = {}
        example_of, offsets, in_context = [], [], []
        for i, e in enumerate(examples):
            room = check_question_room(tokenizer, e.question, seq_len, i + 1)
            enc = tokenizer(e.question, e.context, truncation="only_second", max_length=seq_len, padding="max_length",
                            stride=min(seq_len // STRIDE_SHARE, room - 1), return_overflowing_tokens=True,
                            return_offsets_mapping=True)  # fmt: skip
            for w in range(len(enc["input_ids"])):
                for name in ("input_ids", "attention_mask", "token_type_ids"):
                    if name in enc:
                        inputs.setdefault(name, []).append(enc[name][w])
                example_of.append(i)
                offsets.append(enc["offset_mapping"][w])
                in_context.append([s == 1 for s in enc.sequence_ids(w)])
        return {"inputs": {k: np.asarray(v, dtype=np.int64) for k, v in inputs.items()}, "example": example_of,
                "offsets": offsets, "in_context": np.asarray(in_context)}  # fmt: skip

    def answer(self, loaded, examples: list[Example], seq_len: int, no_answer: bool) -> list[str]:
        """Each example's answer: the best span over its windows (or "" where `no_answer` and the model's
        no-answer score, its start and end logits at the first position, is higher in every window)."""
        import torch

        win = self.windows(loaded.tokenizer, examples, seq_len)
        logits = []
        for i in range(0, len(win["example"]), 32):
            batch = {k: v[i : i + 32] for k, v in win["inputs"].items()}
            if loaded.return_tensors == "pt":
                batch = {k: torch.from_numpy(v) for k, v in batch.items()}
            logits.append(loaded.logits(loaded.to_device(batch)))
        logits = np.concatenate(logits)
        starts, ends, span_scores = best_spans(logits, win["in_context"])
        null = logits[:, 0, 0] + logits[:, 1, 0]
        best: dict[int, tuple[float, str]] = {}
        least_null: dict[int, float] = {}
        for w, i in enumerate(win["example"]):
            least_null[i] = min(least_null.get(i, np.inf), float(null[w]))
            if np.isfinite(span_scores[w]) and span_scores[w] > best.get(i, (-np.inf, ""))[0]:
                offsets = win["offsets"][w]
                best[i] = (
                    float(span_scores[w]),
                    examples[i].context[offsets[starts[w]][0] : offsets[ends[w]][1]],
                )
        return [
            "" if i not in best or (no_answer and least_null[i] > best[i][0]) else best[i][1]
            for i in range(len(examples))
        ]

    def score(self, loaded, path: Path, seq_len: int) -> dict:
        """SQuAD's F1 (predictions: the answers). Where any question of the file has no answer (SQuAD 2.0), the
        model may answer none."""
        from transformers.data.metrics.squad_metrics import compute_f1

        examples = self.read(path)
        no_answer = any(not e.answers for e in examples)
        predicted = self.answer(loaded, examples, seq_len, no_answer)
        f1 = [max(compute_f1(gold, p) for gold in (e.answers or ("",))) for e, p in zip(examples, predicted,
                                                                                            strict=True)]  # fmt: skip
        return {"metric_name": self.metric_name, "metric": float(np.mean(f1)), "predictions": predicted}

    @staticmethod
    def at_real_tokens(values, mask):
        """The start and end logits ([batch, 2, tokens]) at the real tokens."""
        return values.swapaxes(1, 2)[mask]

    def share_right(
        self, outputs: np.ndarray, targets: np.ndarray, mask: np.ndarray, source_dir: Path
    ) -> float:
        """The share of answers whose first and last token both come out right (exact match, in tokens)."""
        return float((outputs.argmax(-1) == targets).all(-1).mean())

    def agreement(self, source: np.ndarray, variant: np.ndarray, mask: np.ndarray, source_dir: Path) -> float:
        """The share of inputs whose best span (over the real tokens) the variant keeps."""
        allowed = mask.astype(bool)
        a, b = best_spans(source, allowed), best_spans(variant, allowed)
        return float(((a[0] == b[0]) & (a[1] == b[1])).mean())


TASK = QuestionAnswering()
