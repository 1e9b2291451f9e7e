"""Sequence classification: `text`/`label` data, accuracy, agreement of the predicted class."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slimbench.tasks.base import Task


class Classification(Task):
    name = "text-classification"
    auto_class_name = "AutoModelForSequenceClassification"
    ort_class_name = "ORTModelForSequenceClassification"
    export_task = "text-classification"
    architecture_suffixes = ("ForSequenceClassification",)
    metric_name = "accuracy"
    trainable = True

    def read(self, path: Path, config):
        from slimbench.core.data import read_labelled

        return read_labelled(path, getattr(config, "label2id", None))

    def check_data(self, path: Path, config) -> int:
        return len(self.read(path, config))

    def score(self, loaded, path: Path, seq_len: int) -> dict:
        data = self.read(path, loaded.config)
        logits = np.concatenate(
            [loaded.logits(loaded.encode(data.texts[i : i + 32], seq_len)) for i in range(0, len(data), 32)]
        )
        predictions = logits.argmax(-1)
        return {
            "metric_name": self.metric_name,
            "metric": float((predictions == np.asarray(data.labels)).mean()),
            "predictions": predictions.tolist(),
            "logits": logits.round(5).tolist(),
        }


TASK = Classification()
