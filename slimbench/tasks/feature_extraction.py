"""Sentence embeddings (a bare encoder, e.g. a sentence-transformers checkpoint): the model's token
embeddings pooled as the checkpoint's sentence-transformers `Pooling` module says (mean where it says
nothing). Scored on sentence pairs with a similarity score (`sentence1`, `sentence2`, `score`: Spearman
correlation of the cosine similarity with the score, as sentence-transformers' EmbeddingSimilarityEvaluator
and MTEB's STS tasks report it) or on labelled texts (`text`, `label`: leave-one-out nearest-neighbour
accuracy, the share of texts whose most similar other text has the same label). Agreement with the source
is the Spearman correlation of the similarities of every pair of inputs, the variant's against the source's."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slimbench import SlimbenchError
from slimbench.core.data import PAIR_COLUMNS as SENTENCE_COLUMNS
from slimbench.core.data import LabelledText
from slimbench.tasks.base import Task, deciles, spearman

PAIR_COLUMNS = (*SENTENCE_COLUMNS, "score")  # STS data: the two sentences and their similarity
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "lasttoken")  # in sentence-transformers' order
# sentence-transformers' Pooling configs before 5.x: a flag per mode
LEGACY_POOLING_KEYS = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
                       "pooling_mode_mean_tokens": "mean", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                       "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}  # fmt: skip
# the files that make a directory load with sentence_transformers.SentenceTransformer, copied into variants
SENTENCE_TRANSFORMERS_FILES = (
    "modules.json",
    "config_sentence_transformers.json",
    "sentence_bert_config.json",
)


def pooling_modes(model_dir: Path) -> tuple[str, ...]:
    """The pooling modes a sentence-transformers directory declares (modules.json -> its Pooling module's
    config.json: `pooling_mode`, or the flags older versions wrote), in the order sentence-transformers
    concatenates them; ("mean",) without one."""
    modules = Path(model_dir) / "modules.json"
    if not modules.is_file():
        return ("mean",)
    for module in json.loads(modules.read_text()):
        if module.get("type", "").endswith("Pooling"):
            config = json.loads((Path(model_dir) / module["path"] / "config.json").read_text())
            declared = config.get("pooling_mode")
            if declared is None:
                declared = [mode for key, mode in LEGACY_POOLING_KEYS.items() if config.get(key)]
            modes = (declared,) if isinstance(declared, str) else tuple(declared)
            unsupported = [m for m in modes if m not in POOLING_MODES]
            if unsupported:
                raise SlimbenchError(f"{model_dir}: pooling {unsupported[0]!r} is not one slimbench computes "
                                     f"({', '.join(POOLING_MODES)})")  # fmt: skip
            return modes or ("mean",)
    return ("mean",)


def pool(tokens: np.ndarray, mask: np.ndarray, modes: tuple[str, ...]) -> np.ndarray:
    """Sentence embeddings (batch, hidden * len(modes)) from token embeddings (batch, tokens, hidden) and the
    attention mask, as sentence-transformers' Pooling computes them."""
    tokens = tokens.astype(np.float32)
    mask = mask.astype(np.float32)[..., None]
    counts = np.clip(mask.sum(1), 1e-9, None)
    out = []
    for mode in modes:
        if mode == "cls":
            out.append(tokens[:, 0])
        elif mode == "max":
            out.append(np.where(mask > 0, tokens, -1e9).max(1))
        elif mode == "mean":
            out.append((tokens * mask).sum(1) / counts)
        elif mode == "mean_sqrt_len_tokens":
            out.append((tokens * mask).sum(1) / np.sqrt(counts))
        else:  # lasttoken: the last real token of each row, whichever side the padding is on
            last = mask[..., 0].shape[1] - 1 - np.argmax(mask[..., 0][:, ::-1], axis=1)
            out.append(tokens[np.arange(len(tokens)), last])
    return np.concatenate(out, axis=-1)


@dataclass(frozen=True)
class Texts:
    """A feature-extraction data file: every text (None where it has no 'text' column), with its labels, or
    for pairs (first sentences, then second ones) a score per pair."""

    texts: list[str] | None
    labels: np.ndarray | None = None
    scores: np.ndarray | None = None


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.clip(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12, None)


def nearest_labels(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """For each of the unit-length `embeddings`, the label of its most similar other one (a leave-one-out
    nearest-neighbour classifier)."""
    similarity = embeddings @ embeddings.T
    np.fill_diagonal(similarity, -np.inf)
    return np.asarray(labels)[similarity.argmax(-1)]


class FeatureExtraction(Task):
    name = "feature-extraction"
    auto_class_name = "AutoModel"
    ort_class_name = "ORTModelForFeatureExtraction"
    export_task = "feature-extraction"
    architecture_suffixes = ("Model",)  # BertModel, MPNetModel...; checked after every task with a head
    metric_name = "spearman_cosine"  # on sentence pairs; nn_accuracy on labelled texts
    agreement_measure = "Spearman correlation of the pairwise similarities of the sentence embeddings"
    output_name = "embedding"
    trainable = True  # recovery distils the source's token embeddings (no labels needed)
    head = False

    @staticmethod
    def read(path: Path) -> Texts:
        """The file, read once: pairs where it has PAIR_COLUMNS, else its 'text' column (and 'label', as
        given: any names or ids, only equality counts)."""
        from slimbench.core.data import read_frame

        df = read_frame(path, set())
        if set(PAIR_COLUMNS) <= set(df.columns):
            scores = df["score"].to_numpy(dtype=np.float64, na_value=np.nan)
            if np.isnan(scores).any():
                raise SlimbenchError(f"data file {str(path)!r}: every 'score' must be a number")
            return Texts([str(t) for t in df["sentence1"]] + [str(t) for t in df["sentence2"]], scores=scores)
        if "text" not in df.columns:
            return Texts(None)
        labels = df["label"].astype(str).to_numpy() if "label" in df.columns else None
        return Texts([str(t) for t in df["text"]], labels=labels)

    @staticmethod
    def scored(path: Path, data: Texts) -> Texts:
        """`data`, where it can be scored (pairs, or labelled texts); else the error naming both shapes."""
        if data.scores is None and data.labels is None:
            raise SlimbenchError(f"data file {str(path)!r}: feature-extraction eval data has 'text' and 'label', "
                                 f"or {', '.join(map(repr, PAIR_COLUMNS))}")  # fmt: skip
        return data

    def check_data(self, path: Path, config) -> int:
        data = self.scored(path, self.read(path))
        return len(data.scores) if data.scores is not None else len(data.texts)

    def read_train(self, path: Path, config) -> LabelledText:
        """Texts (distillation and calibration need no labels): a 'text' column, or both sentences of each
        pair; with their labels as ids where the file has 'label' (accuracy-aware quantization scores the
        nearest-neighbour accuracy on them)."""
        data = self.read(path)
        texts = self.texts_of(path, data)
        if data.labels is None:
            return LabelledText(texts)
        ids = {name: i for i, name in enumerate(sorted(set(data.labels)))}
        return LabelledText(texts, [ids[name] for name in data.labels])

    @staticmethod
    def texts_of(path: Path, data: Texts) -> list[str]:
        if data.texts is None:
            raise SlimbenchError(f"data file {str(path)!r}: feature-extraction data has 'text' (and 'label' "
                                 f"to score), or {', '.join(map(repr, PAIR_COLUMNS))}")  # fmt: skip
        return data.texts

    def latency_texts(self, path: Path) -> list[str]:
        return self.texts_of(path, self.read(path))

    @staticmethod
    def embed(loaded, texts: list[str], seq_len: int, modes: tuple[str, ...]) -> np.ndarray:
        out = []
        for i in range(0, len(texts), 32):
            batch = loaded.encode(texts[i : i + 32], seq_len)
            mask = batch["attention_mask"]
            mask = mask.cpu().numpy() if hasattr(mask, "cpu") else np.asarray(mask)
            out.append(pool(loaded.logits(batch), mask, modes))
        return unit(np.concatenate(out))

    def score(self, loaded, path: Path, seq_len: int) -> dict:
        """Spearman of cosine similarity and score on pairs (predictions: each pair's decile of similarity);
        nearest-neighbour accuracy on labelled texts (predictions: the label of each text's nearest other
        text, the class a nearest-neighbour classifier predicts)."""
        modes = pooling_modes(loaded.path)
        data = self.scored(path, self.read(path))
        if data.scores is not None:
            half = len(data.scores)  # each side embedded on its own, in its own batches
            first, second = (
                self.embed(loaded, side, seq_len, modes) for side in (data.texts[:half], data.texts[half:])
            )
            cosine = (first * second).sum(-1)
            return {
                "metric_name": "spearman_cosine",
                "metric": spearman(cosine, data.scores),
                "predictions": deciles(cosine),
            }
        texts, labels = data.texts, data.labels
        if len(texts) < 2:
            raise SlimbenchError(
                f"data file {str(path)!r}: nearest-neighbour accuracy needs at least 2 texts"
            )
        predicted = nearest_labels(self.embed(loaded, texts, seq_len, modes), labels)
        return {
            "metric_name": "nn_accuracy",
            "metric": float((predicted == labels).mean()),
            "predictions": predicted.tolist(),
        }

    def share_right(
        self, outputs: np.ndarray, targets: np.ndarray, mask: np.ndarray, source_dir: Path
    ) -> float:
        """Nearest-neighbour accuracy of the token embeddings `outputs`, pooled as the source pools them."""
        return float(
            (nearest_labels(unit(pool(outputs, mask, pooling_modes(source_dir))), targets) == targets).mean()
        )

    def agreement(self, source: np.ndarray, variant: np.ndarray, mask: np.ndarray, source_dir: Path) -> float:
        """How well the variant keeps what its embeddings are used for, the ranking of texts by similarity: the
        Spearman correlation of the cosine similarities of every pair of the inputs, the variant's against the
        source's (both pooled as the source pools); not how close the embeddings stay, which a recovered pruned
        encoder's move further from the source's than an int8 one's while ranking as well. Fewer than 3 inputs
        (or all pairs alike): the mean cosine similarity of the embeddings with the source's."""
        modes = pooling_modes(source_dir)
        a, b = unit(pool(source, mask, modes)), unit(pool(variant, mask, modes))
        cosine = float((a * b).sum(-1).mean())
        pairs = np.triu_indices(len(a), 1)
        if len(pairs[0]) < 3:
            return cosine
        rho = spearman((a @ a.T)[pairs], (b @ b.T)[pairs])
        return cosine if np.isnan(rho) else rho

    @staticmethod
    def save_files(source: Path, out: Path) -> None:
        """Copy the checkpoint's sentence-transformers files (modules, pooling and normalization configs), so
        the variant loads with sentence_transformers.SentenceTransformer as its source does."""
        import shutil

        source = Path(source)
        for name in SENTENCE_TRANSFORMERS_FILES:
            if (source / name).is_file():
                shutil.copy2(source / name, out / name)
        if (source / "modules.json").is_file():
            for module in json.loads((source / "modules.json").read_text()):
                folder = module.get("path")
                if folder and (source / folder).is_dir():
                    shutil.copytree(source / folder, out / folder, dirs_exist_ok=True)


TASK = FeatureExtraction()
