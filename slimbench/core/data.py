"""Labelled text a user brings (JSONL or CSV with `text` and `label` columns, `sentence1`, `sentence2` and
`label` for a model that reads sentence pairs, or for token classification words and their tags) and its
encoding."""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from slimbench import SlimbenchError

if TYPE_CHECKING:
    import torch

Text = str | tuple[str, str]  # one input: a text, or a pair of sentences a cross-encoder reads together
PAIR_COLUMNS = ("sentence1", "sentence2")  # GLUE's names for the two sentences of a pair (MRPC, RTE, STS-B)


@dataclass(frozen=True)
class LabelledText:
    """Examples to train or calibrate on: `texts` (or sentence pairs) with a label each (text classification:
    a class id, a number for a one-score head, a 0/1 per class for a multi-label head), with no labels (a
    causal LM's text), with a target text each (seq2seq), or with the `words` of each text and a tag id per word
    (token classification; `texts` are then the words joined by spaces)."""

    texts: list[Text]
    labels: list | None = None
    words: list[list[str]] | None = None
    # labels are character spans (start, end) in each pair's second text, or None for none: an extractive
    # question-answering head's answer in the context
    spans: bool = False

    def __len__(self) -> int:
        return len(self.texts)

    def select(self, indices) -> LabelledText:
        """The examples at `indices` (a range or a list), in that order."""
        return LabelledText(*(None if xs is None else [xs[i] for i in indices]
                              for xs in (self.texts, self.labels, self.words)), spans=self.spans)  # fmt: skip


def read_frame(path: str | Path, columns: set[str]):
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise SlimbenchError(f"data file {str(path)!r} does not exist")
    try:
        if path.suffix == ".csv":
            df = pd.read_csv(path)
        elif path.suffix in (".jsonl", ".json"):
            df = pd.read_json(path, lines=True)
        else:
            raise SlimbenchError(f"data file {str(path)!r}: use .jsonl or .csv")
    except ValueError as e:
        raise SlimbenchError(f"data file {str(path)!r} could not be read: {e}") from None
    if len(df) == 0:
        raise SlimbenchError(f"data file {str(path)!r} has no rows")
    missing = columns - set(df.columns)
    if missing:
        need = " and ".join(repr(c) for c in sorted(columns))
        raise SlimbenchError(f"data file {str(path)!r} lacks column(s) {sorted(missing)} (needs {need})")
    return df


def read_texts(path: str | Path) -> list[str]:
    """The `text` column of a JSONL or CSV file."""
    return [str(t) for t in read_frame(path, {"text"})["text"].tolist()]


def _inputs(path: str | Path, df, also: tuple[str, ...] = ()) -> list[Text]:
    """The model inputs of a data frame: its `text` column, else (`sentence1`, `sentence2`) pairs."""
    if "text" in df.columns:
        return [str(t) for t in df["text"].tolist()]
    if set(PAIR_COLUMNS) <= set(df.columns):
        return [
            (str(a), str(b)) for a, b in zip(df["sentence1"].tolist(), df["sentence2"].tolist(), strict=True)
        ]
    need = " and ".join(repr(c) for c in ("text", *also))
    pairs = " and ".join([", ".join(repr(c) for c in PAIR_COLUMNS), *map(repr, also)])
    raise SlimbenchError(f"data file {str(path)!r} lacks column(s) ['text'] (needs {need}, or {pairs} for "
                         f"sentence pairs)")  # fmt: skip


def read_inputs(path: str | Path) -> list[Text]:
    """The `text` column of a JSONL or CSV file, or its sentence pairs (`sentence1`, `sentence2`)."""
    return _inputs(path, read_frame(path, set()))


HEAD_KINDS = ("single_label", "multi_label", "regression")


def _class_id(path, i: int, raw, label2id: dict[str, int] | None) -> int:
    if isinstance(raw, str) and label2id and raw in label2id:
        return int(label2id[raw])
    if isinstance(raw, str) and raw.strip().lstrip("-").isdigit():
        return int(raw)
    if isinstance(raw, (int, float)) and float(raw).is_integer():
        return int(raw)
    names = ", ".join(label2id) if label2id else "(model has no label names)"
    unnamed = ""
    if label2id and all(name == f"LABEL_{j}" for name, j in label2id.items()):
        unnamed = (" (the model's labels have no names: use ids, or name them in its config.json's id2label; "
                   "for a peft adapter, save the fine-tuned model's config beside it: model.config.save_pretrained)")  # fmt: skip
    raise SlimbenchError(
        f"data file {str(path)!r} row {i + 1}: label {raw!r} is neither an id nor one of {names}{unnamed}"
    )


def _label(path, i: int, raw, label2id: dict[str, int] | None, kind: str):
    """One row's label as the head reads it: a class id; a number (one-score head); a 0/1 per class, from the
    list of classes that apply (multi-label: a JSON list, or names or ids separated by commas)."""
    if kind == "regression":
        try:
            value = float(raw)
        except (TypeError, ValueError):
            value = float("nan")
        if value != value:
            raise SlimbenchError(f"data file {str(path)!r} row {i + 1}: label {raw!r} is not a number (the "
                                 f"model has one output, a score)")  # fmt: skip
        return value
    if kind == "multi_label":
        if isinstance(raw, list):
            listed = raw
        elif raw is None or raw != raw:  # an empty CSV cell: no class applies
            listed = []
        else:
            listed = [x for x in str(raw).split(",") if x.strip()]
        hot = [0.0] * len(label2id)
        for item in listed:
            j = _class_id(path, i, item.strip() if isinstance(item, str) else item, label2id)
            if not 0 <= j < len(hot):
                raise SlimbenchError(f"data file {str(path)!r}: label id {j} is outside 0..{len(hot) - 1}")
            hot[j] = 1.0
        return hot
    return _class_id(path, i, raw, label2id)


def read_labelled(
    path: str | Path, label2id: dict[str, int] | None = None, kind: str = "single_label"
) -> LabelledText:
    """Read `text` (or `sentence1` and `sentence2`) and `label` rows. Labels are ids, or names from the model's
    `label2id`; numbers for a one-score head (kind "regression"); for a multi-label head the classes that
    apply, each an id or a name (HEAD_KINDS)."""
    df = read_frame(path, set())
    inputs = _inputs(path, df, ("label",))
    if "label" not in df.columns:
        text = "'text'" if isinstance(inputs[0], str) else ", ".join(map(repr, PAIR_COLUMNS))
        raise SlimbenchError(f"data file {str(path)!r} lacks column(s) ['label'] (needs {text} and 'label')")
    labels = [_label(path, i, raw, label2id, kind) for i, raw in enumerate(df["label"].tolist())]
    if kind == "single_label" and label2id:
        bad = [x for x in labels if not 0 <= x < len(label2id)]
        if bad:
            raise SlimbenchError(
                f"data file {str(path)!r}: label id {bad[0]} is outside 0..{len(label2id) - 1}"
            )
    return LabelledText(inputs, labels)


def write_jsonl(path: Path, data: LabelledText) -> None:
    with open(path, "w") as f:
        for text, label in zip(data.texts, data.labels, strict=True):
            f.write(json.dumps({"text": text, "label": label}) + "\n")


def least_seq_len(tokenizer, pairs: bool = False) -> int:
    """The shortest sequence that still holds text: the special tokens the tokenizer adds to every
    text (or pair of sentences), and one token of it (of each sentence)."""
    return tokenizer.num_special_tokens_to_add(pair=pairs) + 1 + pairs


def check_seq_len(tokenizer, seq_len: int, pairs: bool = False) -> None:
    """Refuse a length the special tokens fill: the tokenizer cannot truncate a text to it, and would
    hand the model the whole text instead."""
    least = least_seq_len(tokenizer, pairs)
    if seq_len < least:
        what = "pair of sentences" if pairs else "text"
        raise SlimbenchError(
            f"sequence length {seq_len} holds no text: the tokenizer adds {least - 1 - pairs} special token(s) "
            f"to every {what}; use at least {least}"
        )


NO_TARGET = -100  # a position with nothing to predict (cross-entropy's ignore_index)
_WORD_TOKENIZERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> one built for words


def word_tokenizer(tokenizer):
    """`tokenizer`, or where it refuses text split into words, the same tokenizer built (once) to take them:
    byte-level BPE tokenizers (GPT-2's, RoBERTa's) take words only when built with
    add_prefix_space=True, as transformers' token-classification examples build them to fine-tune."""
    if tokenizer in _WORD_TOKENIZERS:
        return _WORD_TOKENIZERS[tokenizer]
    try:
        tokenizer([["word"]], is_split_into_words=True)
        return tokenizer
    except AssertionError:
        from transformers import AutoTokenizer

        built = AutoTokenizer.from_pretrained(tokenizer.name_or_path, add_prefix_space=True)
        built.pad_token = built.pad_token or tokenizer.pad_token  # where the task set one after loading
        _WORD_TOKENIZERS[tokenizer] = built
        return built


def encode_words(tokenizer, words: list[list[str]], seq_len: int, return_tensors: str = "pt",
                 padding: str = "max_length"):  # fmt: skip
    """Texts given as words, each word's sub-words kept apart (`word_ids`), padded to `seq_len` (or, with
    padding="longest", to the longest of them)."""
    check_seq_len(tokenizer, seq_len)
    return word_tokenizer(tokenizer)(
        words, is_split_into_words=True, max_length=seq_len, truncation=True, padding=padding,
        return_tensors=return_tensors,
    )  # fmt: skip


def first_subwords(encoding, row: int) -> dict[int, int]:
    """Word index -> position of its first sub-word in row `row` of `encode_words`' encoding (the
    position a token classifier's tag for the word is read from; words cut off by truncation are
    absent)."""
    first: dict[int, int] = {}
    for pos, word in enumerate(encoding.word_ids(row)):
        if word is not None and word not in first:
            first[word] = pos
    return first


def check_question_room(tokenizer, question: str, seq_len: int, row: int) -> int:
    """The tokens a sequence of `seq_len` leaves for the context after `question` (at least 2, else an error
    naming the question, the 1-based `row`)."""
    special = tokenizer.num_special_tokens_to_add(pair=True)
    room = seq_len - special - len(tokenizer(question, add_special_tokens=False)["input_ids"])
    if room < 2:
        raise SlimbenchError(f"question {row} ({question[:40]!r}) fills the sequence length {seq_len} and leaves "
                             "no room for its context; use a longer sequence (the bench's --eval-seq-len, "
                             "recover's max_len)")  # fmt: skip
    return room


def answer_window(
    tokenizer, context: str, span: tuple[int, int] | None, room: int
) -> tuple[str, tuple | None]:
    """(context, span) cut so that the answer lies within the first `room` tokens of the context: where it lies
    beyond them, the context from a word that centres the answer in a window of `room` tokens (the window of a
    long context that holds the answer, one of those transformers' question-answering examples train on)."""
    if span is None:
        return context, span
    offsets = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    inside = [i for i, (start, end) in enumerate(offsets) if start < span[1] and end > span[0]]
    if not inside or inside[-1] < room:
        return context, span
    first, last = inside[0], inside[-1]
    first = max(0, min(first, last + 1 - room + (room - (last - first + 1)) // 2))
    while first and not context[offsets[first][0] - 1].isspace():  # a whole word: tokenized as in the context
        first -= 1
    cut = offsets[first][0]
    return context[cut:], (span[0] - cut, span[1] - cut)


def encode_spans(tokenizer, data: LabelledText, seq_len: int, padding: str = "max_length"):
    """Question/context pairs (the context alone truncated; a long one cut to the window that holds the answer:
    `answer_window`) and their targets [n, 2]: the answer's first and last token, as transformers'
    question-answering examples train them; the first position (the no-answer choice) twice where there is no
    answer or it does not fit the sequence."""
    import torch

    check_seq_len(tokenizer, seq_len, pairs=True)
    contexts, spans = [], []
    for row, ((question, context), span) in enumerate(zip(data.texts, data.labels, strict=True), start=1):
        room = check_question_room(tokenizer, question, seq_len, row)
        context, span = answer_window(tokenizer, context, span, room)
        contexts.append(context)
        spans.append(span)
    enc = tokenizer([q for q, _ in data.texts], contexts, max_length=seq_len, truncation="only_second",
                    padding=padding, return_offsets_mapping=True, return_tensors="pt")  # fmt: skip
    offsets = enc.pop("offset_mapping")
    targets = torch.zeros((len(data), 2), dtype=torch.long)
    for row, span in enumerate(spans):
        context = [i for i, s in enumerate(enc.sequence_ids(row)) if s == 1]
        if span is None or not context:
            continue
        inside = [i for i in context if offsets[row, i, 0] < span[1] and offsets[row, i, 1] > span[0]]
        if inside and offsets[row, context[-1], 1] >= span[1]:
            targets[row] = torch.tensor([inside[0], inside[-1]])
    return dict(enc), targets


def encode_labelled(
    tokenizer, data: LabelledText, seq_len: int, padding: str = "max_length"
) -> tuple[dict, torch.Tensor]:
    """Encodings of labelled examples (torch, padded as `encode` pads) and their targets: a label per text,
    a tag per token at each word's first sub-word and NO_TARGET elsewhere, or an answer's first and last token."""
    import torch

    if data.spans:
        return encode_spans(tokenizer, data, seq_len, padding)
    if data.words is None:
        return dict(encode(tokenizer, data.texts, seq_len, padding=padding)), torch.tensor(data.labels)
    enc = encode_words(tokenizer, data.words, seq_len, padding=padding)
    targets = torch.full(enc["input_ids"].shape, NO_TARGET)
    for row, tags in enumerate(data.labels):
        for word, pos in first_subwords(enc, row).items():
            targets[row, pos] = tags[word]
    return dict(enc), targets


def is_pairs(texts: list[Text]) -> bool:
    return bool(texts) and not isinstance(texts[0], str)


def encode(
    tokenizer, texts: list[Text], seq_len: int, return_tensors: str = "pt", padding: str = "max_length"
):
    """Pad/truncate to exactly `seq_len` tokens so every timed batch has the workload's shape (padding="longest":
    truncate to `seq_len`, pad to the longest text, for work that is not timed). Sentence pairs are encoded
    together, as a cross-encoder reads them, the longer sentence truncated first."""
    pairs = is_pairs(texts)
    check_seq_len(tokenizer, seq_len, pairs)
    sides = ([a for a, _ in texts], [b for _, b in texts]) if pairs else (texts,)
    return tokenizer(
        *sides, max_length=seq_len, truncation=True, padding=padding, return_tensors=return_tensors
    )
