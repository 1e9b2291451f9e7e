"""Sequence classification, of a text or of a sentence pair read together (a cross-encoder: `sentence1`,
`sentence2`), with the three heads transformers trains (`problem_type`): one class per input (accuracy;
agreement of the predicted class), a score per input (num_labels 1, e.g. a reranker or an STS cross-encoder:
Spearman correlation with the labels; agreement of the ranking of the inputs by score), or any number of
classes per input (multi-label: micro-averaged F1 of the classes whose logit is positive; agreement of those
decisions)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slimbench.core.data import HEAD_KINDS
from slimbench.tasks.base import Task, deciles, spearman

METRICS = {"single_label": "accuracy", "regression": "spearman", "multi_label": "f1_micro"}
AGREEMENT = {
    "single_label": "of the predictions kept",
    "regression": "Spearman correlation of the scores",
    "multi_label": "of the class decisions kept",
}


def head_kind(config) -> str:
    """How the head's logits are read, as transformers reads them to compute its loss: `problem_type` where the
    config names it, else a score (one label) or one class (more)."""
    kind = {"single_label_classification": "single_label", "multi_label_classification": "multi_label",
            "regression": "regression"}.get(getattr(config, "problem_type", None) or "")  # fmt: skip
    if kind is None:
        kind = "regression" if getattr(config, "num_labels", 2) == 1 else "single_label"
    assert kind in HEAD_KINDS
    return kind


def _config(source_dir: Path):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(source_dir)


def f1_micro(predicted: np.ndarray, targets: np.ndarray) -> float:
    """Micro-averaged F1 of 0/1 decisions (rows x classes): 1.0 where neither side names any class."""
    predicted, targets = predicted.astype(bool), targets.astype(bool)
    tp = float((predicted & targets).sum())
    wrong = float((predicted ^ targets).sum())
    return 1.0 if tp + wrong == 0 else 2 * tp / (2 * tp + wrong)


class Classification(Task):
    name = "text-classification"
    auto_class_name = "AutoModelForSequenceClassification"
    ort_class_name = "ORTModelForSequenceClassification"
    export_task = "text-classification"
    architecture_suffixes = ("ForSequenceClassification",)
    metric_name = "accuracy"  # spearman for a one-score head, f1_micro for a multi-label one (METRICS)
    trainable = True

    def read(self, path: Path, config):
        from slimbench.core.data import read_labelled

        return read_labelled(path, getattr(config, "label2id", None), head_kind(config))

    read_train = read

    def check_data(self, path: Path, config) -> int:
        return len(self.read(path, config))

    def latency_texts(self, path: Path) -> list:
        from slimbench.core.data import read_inputs

        return read_inputs(path)

    def score(self, loaded, path: Path, seq_len: int) -> dict:
        """Accuracy (predictions: the class); Spearman with the labels for a one-score head (predictions: each
        input's decile of score); micro F1 for a multi-label head (predictions: the classes decided)."""
        kind = head_kind(loaded.config)
        data = self.read(path, loaded.config)
        logits = np.concatenate(
            [loaded.logits(loaded.encode(data.texts[i : i + 32], seq_len)) for i in range(0, len(data), 32)]
        )
        labels = np.asarray(data.labels)
        if kind == "regression":
            metric = spearman(logits[:, 0], labels)
            predictions = deciles(logits[:, 0])
        elif kind == "multi_label":
            decided = logits > 0
            metric = f1_micro(decided, labels)
            predictions = [np.flatnonzero(row).tolist() for row in decided]
        else:
            predictions = logits.argmax(-1)
            metric = float((predictions == labels).mean())
            predictions = predictions.tolist()
        return {
            "metric_name": METRICS[kind],
            "metric": metric,
            "predictions": predictions,
            "logits": logits.round(5).tolist(),
        }

    def agreement_described(self, source_dir: Path) -> str:
        return AGREEMENT[head_kind(_config(source_dir))]

    def agreement(self, source: np.ndarray, variant: np.ndarray, mask: np.ndarray, source_dir: Path) -> float:
        """The share of predicted classes kept; for a one-score head the Spearman correlation of the variant's
        scores with the source's (how a reranker's order of the inputs is kept; with fewer than 3 inputs, or
        all the source's scores alike, 1 - the mean error relative to the mean score); for a multi-label head
        the share of (input, class) decisions kept."""
        kind = head_kind(_config(source_dir))
        if kind == "multi_label":
            return float(((source > 0) == (variant > 0)).mean())
        if kind == "regression":
            rho = spearman(source[:, 0], variant[:, 0]) if len(source) >= 3 else float("nan")
            if not np.isnan(rho):
                return rho
            scale = max(float(np.abs(source).mean()), 1e-6)
            return max(0.0, 1.0 - float(np.abs(source - variant).mean()) / scale)
        return super().agreement(source, variant, mask, source_dir)

    def share_right(
        self, outputs: np.ndarray, targets: np.ndarray, mask: np.ndarray, source_dir: Path
    ) -> float:
        kind = head_kind(_config(source_dir))
        if kind == "regression":
            rho = spearman(outputs[:, 0], targets)
            return 0.0 if np.isnan(rho) else rho
        if kind == "multi_label":
            return f1_micro(outputs > 0, targets)
        return super().share_right(outputs, targets, mask, source_dir)


TASK = Classification()
