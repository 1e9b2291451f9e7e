"""Token classification (NER and the like): JSONL rows `{"tokens": [...], "tags": [...]}` with tags
as names from the model's `label2id` (or ids), scored with seqeval's entity-level F1 on the first
sub-word of each word; agreement is per real token."""

from __future__ import annotations

import json
from pathlib import Path

from slimbench import SlimbenchError
from slimbench.core.data import LabelledText, encode_words, first_subwords
from slimbench.tasks.base import Task


class TokenClassification(Task):
    name = "token-classification"
    auto_class_name = "AutoModelForTokenClassification"
    ort_class_name = "ORTModelForTokenClassification"
    export_task = "token-classification"
    architecture_suffixes = ("ForTokenClassification",)
    metric_name = "entity_f1"
    trainable = True

    @staticmethod
    def rows(path: Path, tagged: bool = True) -> list[tuple[int, list, list | None]]:
        """(line number, tokens, tags) of each row, checked for shape; `tagged=False` reads the tokens alone
        (sample inputs)."""
        path = Path(path)
        if not path.is_file():
            raise SlimbenchError(f"data file {str(path)!r} does not exist")
        if path.suffix not in (".jsonl", ".json"):
            raise SlimbenchError(
                f"data file {str(path)!r}: token-classification data is JSONL with 'tokens' and 'tags'"
            )
        rows = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise SlimbenchError(f"data file {str(path)!r} line {i}: not valid JSON") from None
            need = ("tokens", "tags") if tagged else ("tokens",)
            if not isinstance(row, dict) or not all(isinstance(row.get(k), list) for k in need):
                raise SlimbenchError(
                    f"data file {str(path)!r} line {i}: needs {' and '.join(map(repr, need))} lists"
                )
            if tagged and len(row["tokens"]) != len(row["tags"]):
                raise SlimbenchError(f"data file {str(path)!r} line {i}: {len(row['tokens'])} tokens but "
                                     f"{len(row['tags'])} tags")  # fmt: skip
            rows.append((i, [str(w) for w in row["tokens"]], row.get("tags")))
        if not rows:
            raise SlimbenchError(f"data file {str(path)!r} has no rows")
        return rows

    def read(self, path: Path, config) -> tuple[list[list[str]], list[list[str]]]:
        """(words per sentence, tag names per sentence), checked against the model's labels."""
        id2label = {int(k): v for k, v in (getattr(config, "id2label", None) or {}).items()}
        words, tags = [], []
        for i, tokens, row_tags in self.rows(path):
            names = []
            for tag in row_tags:
                name = id2label.get(tag) if isinstance(tag, int) else tag
                if name not in id2label.values():
                    raise SlimbenchError(f"data file {str(path)!r} line {i}: tag {tag!r} is not one of the "
                                         f"model's labels ({', '.join(map(str, id2label.values()))})")  # fmt: skip
                names.append(name)
            words.append(tokens)
            tags.append(names)
        return words, tags

    def check_data(self, path: Path, config) -> int:
        return len(self.read(path, config)[0])

    def read_train(self, path: Path, config) -> LabelledText:
        """The same rows as the eval data: words, with a tag id per word."""
        words, tags = self.read(path, config)
        ids = {name: int(i) for i, name in config.id2label.items()}
        return LabelledText([" ".join(w) for w in words], [[ids[t] for t in row] for row in tags], words)

    def latency_texts(self, path: Path) -> list[str]:
        return [" ".join(tokens) for _, tokens, _ in self.rows(path, tagged=False)]

    def score(self, loaded, path: Path, seq_len: int) -> dict:
        from seqeval.metrics import f1_score

        words, gold = self.read(path, loaded.config)
        id2label = {int(k): v for k, v in loaded.config.id2label.items()}
        predicted, flat = [], []
        for i in range(0, len(words), 32):
            chunk = words[i : i + 32]
            enc = encode_words(loaded.tokenizer, chunk, seq_len, return_tensors=loaded.return_tensors)
            argmax = loaded.logits(loaded.to_device(dict(enc))).argmax(-1)
            for row, sentence in enumerate(chunk):
                first = first_subwords(enc, row)
                # words cut off by truncation are predicted "O"
                tags = [
                    id2label[int(argmax[row, first[w]])] if w in first else "O" for w in range(len(sentence))
                ]
                predicted.append(tags)
                flat.extend(tags)
        return {
            "metric_name": self.metric_name,
            "metric": float(f1_score(gold, predicted)),
            "predictions": flat,
        }


TASK = TokenClassification()
