"""Labelled text a user brings (JSONL or CSV with `text` and `label` columns) and its encoding."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from slimbench import SlimbenchError


@dataclass(frozen=True)
class LabelledText:
    texts: list[str]
    labels: list[int] | None = None  # None: text alone (a causal LM's training text)

    def __len__(self) -> int:
        return len(self.texts)


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


def encode(tokenizer, texts: list[str], seq_len: int, return_tensors: str = "pt"):
    """Pad/truncate to exactly `seq_len` tokens so every timed batch has the workload's shape."""
    check_seq_len(tokenizer, seq_len)
    return tokenizer(
        texts, max_length=seq_len, truncation=True, padding="max_length", return_tensors=return_tensors
    )
