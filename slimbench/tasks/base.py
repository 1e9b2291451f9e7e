"""What every task answers, in one shape: how its labelled data is read, how a workload's inputs
are built and timed, how a variant is scored and compared with its source, which transformers and
optimum classes load it. One file per task beside this one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

BUDGET = 0.99  # a variant is within budget when its metric is >= 99% of the baseline's (MLPerf's rule)
NEW_TOKENS = 32  # tokens generated per input in a generating task's latency workload


def spearman(a, b) -> float:
    """Spearman's rank correlation; nan where either side is constant."""
    import pandas as pd

    a, b = pd.Series(np.asarray(a, dtype=np.float64)), pd.Series(np.asarray(b, dtype=np.float64))
    return float("nan") if a.nunique() < 2 or b.nunique() < 2 else float(a.corr(b, method="spearman"))


def deciles(values: np.ndarray) -> list[int]:
    """Each value's decile (0-9) among `values`, ties in order: the prediction a score or a similarity
    stands for when a variant's are compared with the baseline's."""
    ranks = np.argsort(np.argsort(values, kind="stable"), kind="stable")
    return (ranks * 10 // len(ranks)).tolist()


class Task:
    name: str
    auto_class_name: str  # transformers AutoModelFor*
    ort_class_name: str  # optimum.onnxruntime ORTModelFor*
    export_task: str  # optimum exporter task
    architecture_suffixes: tuple[str, ...]  # config.architectures entries that mean this task
    metric_name: str
    lower_is_better: bool = False  # the metric: accuracy-like (False) or perplexity-like (True)
    generates: bool = False  # latency is generate(): prompt, then new tokens
    throughput_unit: str = "items/s"
    trainable: bool = False  # the recover step can fine-tune it
    head: bool = True  # the model ends in a head whose argmax is its prediction (not bare token embeddings)
    agreement_measure: str = "of the predictions kept"  # what `agreement` measures, for people
    output_name: str = "logit"  # what the model's scores are called, for people
    encoder_decoder: bool = False  # claims only checkpoints whose config says is_encoder_decoder
    # the graphs of an ONNX export, each optimized and quantized
    onnx_files: tuple[str, ...] = ("model.onnx",)

    def auto_class(self):
        import transformers

        return getattr(transformers, self.auto_class_name)

    def ort_class(self):
        import optimum.onnxruntime

        return getattr(optimum.onnxruntime, self.ort_class_name)

    def prepare_tokenizer(self, tokenizer) -> None:
        """Set what this task needs of a tokenizer (padding side, pad token) before encoding."""

    def check_data(self, path: Path, config) -> int:
        """Read labelled eval data against the model's config; returns the number of examples or
        raises SlimbenchError naming the file and the fix."""
        raise NotImplementedError

    def read_train(self, path: Path, config):
        """Labelled examples as LabelledText (training data for recovery and calibration; eval data where a
        quantizer keeps a share of the accuracy): `text` and `label`, labels as the model names them."""
        from slimbench.core.data import read_labelled

        return read_labelled(path, getattr(config, "label2id", None))

    def inputs_from_texts(self, texts: list[str]) -> list:
        """Inputs of this task made of plain texts, where no sample data is given (the texts themselves)."""
        return texts

    def latency_texts(self, path: Path) -> list:
        """Real inputs from the eval file for the latency workloads (texts, or sentence pairs where the task
        reads them)."""
        from slimbench.core.data import read_texts

        return read_texts(path)

    @staticmethod
    def batches(loaded, texts: list[str], batch_size: int, seq_len: int) -> Callable[[int], dict]:
        """A few distinct real batches, encoded (and placed) before timing starts; `batch(i)` cycles
        through them."""
        n_batches = max(1, min(8, len(texts) // batch_size))
        pool = [
            loaded.encode([texts[(b * batch_size + j) % len(texts)] for j in range(batch_size)], seq_len)
            for b in range(n_batches)
        ]
        return lambda i: pool[i % n_batches]

    def workload(self, loaded, texts: list[str], batch_size: int, seq_len: int) -> tuple[Callable, int]:
        """(call(i), items per call): the call timed once per repetition."""
        batch = self.batches(loaded, texts, batch_size, seq_len)
        return (lambda i: loaded.forward(batch(i))), batch_size

    def first_token(self, loaded, texts: list[str], batch_size: int, seq_len: int) -> Callable | None:
        """For generating tasks, the call whose time is the time to first token; None otherwise."""
        return None

    def score(self, loaded, path: Path, seq_len: int) -> dict[str, Any]:
        """{metric_name, metric, predictions} of a loaded variant on the eval file."""
        raise NotImplementedError

    def agreement(self, source: np.ndarray, variant: np.ndarray, mask: np.ndarray, source_dir: Path) -> float:
        """Share of predictions (argmax) the variant shares with its source on the same inputs: one
        per row for logits (batch, classes), one per real token for logits (batch, tokens, classes).
        `source_dir`: the source checkpoint, for a task that reads how to read its outputs there."""
        same = source.argmax(-1) == variant.argmax(-1)
        return float(same[mask.astype(bool)].mean() if same.ndim == 2 else same.mean())

    def compared_inputs(self, model, batch: dict):
        """(inputs, mask): what a variant and its source are both run on when compared (the encoded texts
        themselves; a task whose forward needs more, e.g. a decoder's inputs, adds them with `model`, the torch
        source), and a numpy bool mask [batch, positions] of the positions whose outputs are compared."""
        mask = batch["attention_mask"]
        return batch, np.asarray(mask.cpu() if hasattr(mask, "cpu") else mask).astype(bool)

    @staticmethod
    def at_real_tokens(values, mask):
        """`values` at the real tokens of `mask` [batch, tokens] where there is one per token ([batch, tokens,
        ...]: a token classifier's, a causal LM's, token embeddings); a value per input, all of them."""
        return values[mask] if values.ndim == 3 else values

    def agreement_described(self, source_dir: Path) -> str:
        """What `agreement` measures for the checkpoint at `source_dir`, for people."""
        return self.agreement_measure

    @staticmethod
    def save_files(source: Path, out: Path) -> None:
        """Copy into a variant's directory `out` what its loader needs from the source checkpoint beyond
        the model, config and tokenizer."""

    def share_right(
        self, outputs: np.ndarray, targets: np.ndarray, mask: np.ndarray, source_dir: Path
    ) -> float:
        """The accuracy accuracy-aware quantization keeps (slimbench.optimize.fallback) on encoded labelled
        examples: the share of labels (or of words' tags; NO_TARGET marks none) the argmax of `outputs` gets."""
        from slimbench.core.data import NO_TARGET

        scored = targets != NO_TARGET
        return float((outputs.argmax(-1) == targets)[scored].mean())

    def within_budget(self, ratio: float | None, budget: float = BUDGET) -> bool | None:
        """Whether metric / baseline metric keeps the budget: >= budget, or for a lower-is-better
        metric at most (1 - budget) above the baseline."""
        if ratio is None:
            return None
        return ratio <= 2 - budget if self.lower_is_better else ratio >= budget


class Generating(Task):
    """A task whose latency is generate(): an input of seq_len tokens, then NEW_TOKENS greedy tokens (throughput
    in generated tokens); the time to first token is generate() of one token (the prefill)."""

    generates = True
    throughput_unit = "tokens/s"

    def workload(self, loaded, texts, batch_size, seq_len):
        batch = self.batches(loaded, texts, batch_size, seq_len)
        return (lambda i: loaded.generate(batch(i), NEW_TOKENS)), batch_size * NEW_TOKENS

    def first_token(self, loaded, texts, batch_size, seq_len):
        batch = self.batches(loaded, texts, batch_size, seq_len)
        return lambda i: loaded.generate(batch(i), 1)
