"""Labelled text a user brings (JSONL or CSV with `text` and `label` columns, or for token
classification words and their tags) and its encoding."""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from slimbench import SlimbenchError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class LabelledText:
    """Examples to train or calibrate on: `texts` with a label id each (text classification), with
    no labels (a causal LM's text), or with the `words` of each text and a tag id per word (token
    classification; `texts` are then the words joined by spaces)."""

    texts: list[str]
    labels: list | None = None
    words: list[list[str]] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def select(self, indices) -> LabelledText:
        """The examples at `indices` (a range or a list), in that order."""
        return LabelledText(*(None if xs is None else [xs[i] for i in indices]
                              for xs in (self.texts, self.labels, self.words)))  # fmt: skip


def _read_frame(path: str | Path, columns: set[str]):
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
    return [str(t) for t in _read_frame(path, {"text"})["text"].tolist()]


def read_labelled(path: str | Path, label2id: dict[str, int] | None = None) -> LabelledText:
    """Read `text`/`label` rows. Labels are ids, or names from the model's `label2id`."""
    df = _read_frame(path, {"text", "label"})
    labels = []
    for i, raw in enumerate(df["label"].tolist()):
        if isinstance(raw, str) and label2id and raw in label2id:
            labels.append(int(label2id[raw]))
        elif isinstance(raw, str) and raw.strip().lstrip("-").isdigit():
            labels.append(int(raw))
        elif isinstance(raw, (int, float)) and float(raw).is_integer():
            labels.append(int(raw))
        else:
            names = ", ".join(label2id) if label2id else "(model has no label names)"
            raise SlimbenchError(
                f"data file {str(path)!r} row {i + 1}: label {raw!r} is neither an id nor one of {names}"
            )
    n_labels = len(label2id) if label2id else None
    if n_labels is not None:
        bad = [x for x in labels if not 0 <= x < n_labels]
        if bad:
            raise SlimbenchError(f"data file {str(path)!r}: label id {bad[0]} is outside 0..{n_labels - 1}")
    return LabelledText([str(t) for t in df["text"].tolist()], labels)


def write_jsonl(path: Path, data: LabelledText) -> None:
    with open(path, "w") as f:
        for text, label in zip(data.texts, data.labels, strict=True):
            f.write(json.dumps({"text": text, "label": label}) + "\n")


def least_seq_len(tokenizer) -> int:
    """The shortest sequence that still holds text: the special tokens the tokenizer adds to every
    text, and one token of it."""
    return tokenizer.num_special_tokens_to_add() + 1


def check_seq_len(tokenizer, seq_len: int) -> None:
    """Refuse a length the special tokens fill: the tokenizer cannot truncate a text to it, and would
    hand the model the whole text instead."""
    least = least_seq_len(tokenizer)
    if seq_len < least:
        raise SlimbenchError(
            f"sequence length {seq_len} holds no text: the tokenizer adds {least - 1} special token(s) to "
            f"every text; use at least {least}"
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


def encode_labelled(
    tokenizer, data: LabelledText, seq_len: int, padding: str = "max_length"
) -> tuple[dict, torch.Tensor]:
    """Encodings of labelled examples (torch, padded as `encode` pads) and their targets: a label per text,
    or a tag per token at each word's first sub-word and NO_TARGET elsewhere."""
    import torch

    if data.words is None:
        return dict(encode(tokenizer, data.texts, seq_len, padding=padding)), torch.tensor(data.labels)
    enc = encode_words(tokenizer, data.words, seq_len, padding=padding)
    targets = torch.full(enc["input_ids"].shape, NO_TARGET)
    for row, tags in enumerate(data.labels):
        for word, pos in first_subwords(enc, row).items():
            targets[row, pos] = tags[word]
    return dict(enc), targets


def encode(
    tokenizer, texts: list[str], seq_len: int, return_tensors: str = "pt", padding: str = "max_length"
):
    """Pad/truncate to exactly `seq_len` tokens so every timed batch has the workload's shape (padding="longest":
    truncate to `seq_len`, pad to the longest text, for work that is not timed)."""
    check_seq_len(tokenizer, seq_len)
    return tokenizer(
        texts, max_length=seq_len, truncation=True, padding=padding, return_tensors=return_tensors
    )
